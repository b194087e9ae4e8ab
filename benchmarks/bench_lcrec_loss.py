"""Benchmark: LC-Rec loss with the LM head only at labelled positions vs Hugging Face's full-vocabulary loss.

A SmolLM2-135M-shaped causal LM (hidden 576, 9 heads / 3 KV heads, MLP 1536, tied embeddings, vocabulary 49,152 +
4 x 256 code tokens = 50,176; random weights) on right-padded batches shaped like LC-Rec's seqrec examples: a
prompt of ``T - 5`` tokens and a response of 4 code tokens + EOS, so 5 labelled positions per row. Forward +
backward, one step:

* ``hf_full_logits`` (reference): ``model(input_ids, attention_mask, labels).loss`` -- logits ``[B, T, vocab]``
* ``lcrec_labelled``: :func:`letter_fast.genrec.lcrec.lcrec_loss` -- logits ``[B * 5, vocab]``

The decoder body is cut to ``--layers`` (default 2) so that the CPU run measures the head, not 30 layers; the
head's saving is the same whatever the depth, the body's cost is added to both rows. Usage::

    python benchmarks/bench_lcrec_loss.py            # B = 8, T in {128, 256, 512}
    python benchmarks/bench_lcrec_loss.py --quick    # T = 128 only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import RESULTS, Case, append_markdown, run_cases, shared_machine_note  # noqa: E402
from letter_fast.genrec.lcrec.loss import lcrec_loss  # noqa: E402

NAME = "lcrec_loss"
RESPONSE = 5  # 4 code tokens + EOS


def smollm2_like(layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=49_152 + 1_024, hidden_size=576, intermediate_size=1_536,
                         num_hidden_layers=layers, num_attention_heads=9, num_key_value_heads=3,
                         max_position_embeddings=2_048, tie_word_embeddings=True, rms_norm_eps=1e-5,
                         rope_theta=100_000.0, eos_token_id=2, pad_token_id=2)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return LlamaForCausalLM(config).train()


def batch(B: int, T: int, vocab: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(T - 16, T + 1, (B,), generator=g)
    lengths[0] = T
    ids = torch.randint(3, vocab, (B, T), generator=g)
    pos = torch.arange(T)[None, :]
    mask = pos < lengths[:, None]
    ids[~mask] = 2
    labels = torch.where(mask & (pos >= (lengths - RESPONSE)[:, None]), ids, torch.full_like(ids, -100))
    return {"input_ids": ids, "attention_mask": mask.long(), "labels": labels}


def step_factory(model, B, T, impl):
    def make():
        data = batch(B, T, model.config.vocab_size)
        for p in model.parameters():  # gradients held before the call: the measure is activations + logits
            if p.grad is None:
                p.grad = torch.zeros_like(p)

        def step():
            model.zero_grad(set_to_none=False)
            if impl == "hf_full_logits":
                loss = model(**data, use_cache=False).loss
            else:
                loss = lcrec_loss(model, **data)
            loss.backward()
            return loss.detach()

        return step

    return make


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    model = smollm2_like(args.layers)
    lengths = [128] if args.quick else [128, 256, 512]
    cases = []
    for T in lengths:
        params = {"B": args.batch, "T": T, "vocab": model.config.vocab_size, "layers": args.layers}
        # same loss: checked once per size
        data = batch(args.batch, T, model.config.vocab_size)
        with torch.no_grad():
            diff = abs(float(model(**data).loss) - float(lcrec_loss(model, **data)))
        cases.append(Case(NAME, "hf_full_logits", params, step_factory(model, args.batch, T, "hf_full_logits"),
                          reference=True, repeat=3, warmup=1))
        cases.append(Case(NAME, "lcrec_labelled", params, step_factory(model, args.batch, T, "lcrec_labelled"),
                          repeat=3, warmup=1, note=f"|loss diff| {diff:.1e}"))
    run_cases(NAME, cases, out_dir=args.out)
    logits_mb = {T: args.batch * T * model.config.vocab_size * 4 / 2**20 for T in lengths}
    note = ("Full-vocabulary float32 logits alone are B x T x vocab x 4 bytes: "
            + ", ".join(f"{v:.0f} MB at T = {T}" for T, v in logits_mb.items())
            + f" (the labelled rows: {args.batch * RESPONSE * model.config.vocab_size * 4 / 2**20:.1f} MB); "
            "Hugging Face also keeps their gradient of the same size in backward.\n\n"
            + shared_machine_note("benchmarks/bench_lcrec_loss.py", args.quick,
                                  f"B = {args.batch}, {args.layers} decoder layers of SmolLM2's width"))
    append_markdown(NAME, note, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
