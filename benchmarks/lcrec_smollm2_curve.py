"""A short LC-Rec run on SmolLM2-135M with LoRA: the training loss per optimizer step on Scientific seqrec.

The trainer's own pieces (:class:`letter_fast.genrec.lcrec.train._LCRecTask`: per-epoch examples with a random
template each, length-bucketed micro-batches, the labelled-position loss; AdamW, cosine schedule with warm-up,
clipping at 1.0) driven step by step so that every step's loss, wall and CPU time are recorded (``fit`` records the
loss only at validations). No validation: this measures the loss curve and the speed, not recommendation quality.
LoRA r 8 / alpha 32 / dropout 0.05 on all projections, code-token rows trained (``embeddings = new_rows``),
lr 1e-4 (LETTER-LC-Rec's), float32 on the CPU.

Resumable: the trainable weights, optimizer, scheduler and random streams are saved every ``--checkpoint-every``
steps into ``--out``; the same command continues. Writes ``<out>/curve.csv`` as it goes and, with ``--results``,
``lcrec_smollm2_curve.{csv,md,png}`` there.

    python benchmarks/lcrec_smollm2_curve.py --index runs/scientific/tok-letter/Scientific.index.json \\
        --out runs/lcrec-smollm2-curve --steps 100 --batch-size 8 --micro-batch-size 8
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import save_figure  # noqa: E402

NAME = "lcrec_smollm2_curve"
FIELDS = ["step", "epoch", "loss", "lr", "examples", "tokens", "wall_s", "cpu_s"]


def main(argv=None) -> int:
    from letter_fast.commands.train_tiger import load_data_and_codes
    from letter_fast.genrec.evaluate import build_index
    from letter_fast.genrec.lcrec.train import LCRecTrainConfig, _LCRecTask, build_lcrec_model
    from letter_fast.io import save_torch
    from letter_fast.training import Distributed, derive_seed, rng_state, seed_everything, set_rng_state

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="scientific")
    parser.add_argument("--index", required=True)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, curve.csv)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup-ratio", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--results", type=Path, default=None, help="also write the csv/md/png here")
    parser.add_argument("--report-only", action="store_true", help="write the results from <out>/curve.csv so far")
    args = parser.parse_args(argv)
    if args.report_only:
        with open(args.out / "curve.csv") as f:
            rows = [{k: (float(v) if k in ("epoch", "loss", "lr", "wall_s", "cpu_s") else int(v)) for k, v in r.items()}
                    for r in csv.DictReader(f)]
        report(rows, args, argv)
        return 0

    dataset, codes = load_data_and_codes(args.data, None, args.index)
    config = LCRecTrainConfig(base_model=args.model, batch_size=args.batch_size,
                              micro_batch_size=args.micro_batch_size, lr=args.lr, warmup_ratio=args.warmup_ratio,
                              max_steps=args.steps, seed=args.seed, valid_users=1, device="cpu", progress=False)
    config.validate()
    dist = Distributed("cpu")
    lm, tokenizer, code_tokens = build_lcrec_model(codes, config, dist.device)
    index = build_index(codes, max(code_tokens.num_codes))
    seed_everything(derive_seed(config.seed, "dropout") % 2 ** 62)
    accumulate = config.accumulation(1)
    task = _LCRecTask(config, lm, tokenizer, code_tokens, index, dataset, codes, dist, accumulate)
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt_path, curve_path = args.out / "checkpoint.pt", args.out / "curve.csv"
    step, epoch, position, rows = 0, 0, 0, []
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, weights_only=False)
        task.load_weights(ckpt["model"])
        task.optimizer.load_state_dict(ckpt["optimizer"])
        task.scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"], task.generators())
        step, epoch, position, rows = ckpt["step"], ckpt["epoch"], ckpt["position"], ckpt["rows"]
        print(f"resumed at step {step}", flush=True)
    (args.out / "settings.json").write_text(json.dumps(vars(args), default=str, indent=1))
    task.model.train()
    params = [p for p in lm.parameters() if p.requires_grad]
    while step < args.steps:
        batches = task.batches(epoch)
        if position >= len(batches):
            epoch, position = epoch + 1, 0
            continue
        group = batches[position:position + accumulate]
        weights = [task.batch_weight(b) for b in group]
        w0, c0 = time.perf_counter(), time.process_time()
        task.optimizer.zero_grad(set_to_none=True)
        total, tokens, examples = 0.0, 0, 0
        for b, w in zip(group, weights):
            loss = task.train_step(task.model, b)
            (loss * (w / sum(weights))).backward()
            total += float(loss.detach()) * w / sum(weights)
            tokens += int(task._collate(b)["attention_mask"].sum())
            examples += task.batch_samples(b)
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        task.optimizer.step()
        task.scheduler.step()
        step, position = step + 1, position + len(group)
        rows.append(dict(step=step, epoch=round(epoch + position / len(batches), 5), loss=round(total, 5),
                         lr=task.scheduler.get_last_lr()[0], examples=examples, tokens=tokens,
                         wall_s=round(time.perf_counter() - w0, 3), cpu_s=round(time.process_time() - c0, 3)))
        print(rows[-1], flush=True)
        _write_curve(curve_path, rows)
        if step % args.checkpoint_every == 0 or step == args.steps:
            save_torch(dict(model=task.weights(), optimizer=task.optimizer.state_dict(),
                            scheduler=task.scheduler.state_dict(), rng=rng_state(task.generators()), step=step,
                            epoch=epoch, position=position, rows=rows), ckpt_path)
    if args.results is not None:
        report(rows, args, argv)
    return 0


def _write_curve(path: Path, rows: list) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def report(rows: list, args, argv=None) -> None:
    out = args.results
    _write_curve(out / f"{NAME}.csv", rows)
    wall = sum(r["wall_s"] for r in rows)
    cpu = sum(r["cpu_s"] for r in rows)
    tokens = sum(r["tokens"] for r in rows)
    first = sum(r["loss"] for r in rows[:5]) / min(5, len(rows))
    last = sum(r["loss"] for r in rows[-5:]) / min(5, len(rows))
    lines = [f"# {NAME}: SmolLM2-135M + LoRA r 8 on Scientific seqrec, training loss per step", "",
             f"{len(rows)} optimizer steps of {args.batch_size} examples (micro-batch {args.micro_batch_size}), "
             f"lr {args.lr} (cosine, {args.warmup_ratio:.0%} warm-up over {args.steps} planned steps), LETTER "
             f"identifiers, float32, 1 thread, nice 10 on the shared 2-core machine.", "",
             f"Loss (response tokens + EOS, mean per target token): first 5 steps {first:.3f}, last 5 steps "
             f"{last:.3f}. {tokens} real tokens in {wall:.0f} s wall / {cpu:.0f} s CPU: {tokens / wall:.1f} tokens/s "
             f"wall, {tokens / cpu:.1f} tokens/s per CPU second ({sum(r['examples'] for r in rows) / wall:.2f} "
             "examples/s wall). This is a few hundred examples out of 33,541 per epoch: the curve says the "
             "pipeline trains, not where it converges (no validation in this run).", "",
             "Curve: lcrec_smollm2_curve.csv, lcrec_smollm2_curve.png.", "",
             "Command: `python benchmarks/lcrec_smollm2_curve.py " + " ".join(argv or sys.argv[1:]) + "`", ""]
    (out / f"{NAME}.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker=".")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        ax.set_title("SmolLM2-135M + LoRA r 8, Scientific seqrec")
        fig.tight_layout()
        save_figure(fig, out / f"{NAME}.png")
    except ImportError:
        pass


if __name__ == "__main__":
    raise SystemExit(main())
