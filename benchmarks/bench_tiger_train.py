"""Benchmark: TIGER training throughput (samples/s) with length-bucketed batches vs padding.

Default TIGER (4+4 layers, d_model 128), ranking-guided loss, AdamW, batch 256, float32 on CPU (bf16 autocast on
CUDA); Instruments training samples (LETTER identifiers; a synthetic catalog when the data is absent). One call =
``--steps`` optimizer steps over a fixed list of batches built by each strategy:

* ``pad-to-81`` (reference): random batches, every history padded to 20 items (81 tokens), as a fixed-shape
  pipeline does;
* ``pad-to-batch-max``: random batches padded to their longest row (a dynamic-padding collator);
* ``length-bucketed``: ``letter_fast.genrec.train.bucketed_batches`` (the trainer's sampler; in training, random
  windows of 50 batches sorted by length), so each batch pads to a similar length.

All three see the same random samples (``--steps`` x ``--batch-size`` of them), so samples/s compare like for like.

    flock /tmp/letter_fast_bench.lock python benchmarks/bench_tiger_train.py --threads 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import RESULTS, Case, append_markdown, run_cases  # noqa: E402
from letter_fast.genrec.tiger import CodeVocabulary, build_tiger, sequences_from_samples, tiger_loss  # noqa: E402
from letter_fast.genrec.train import bucketed_batches  # noqa: E402

NAME = "tiger_train"


def training_sequences(data_root=None):
    from letter_fast.data import load_dataset, split_dataset

    try:
        dataset = load_dataset("instruments", data_root)
        codes, note = dataset.codes, "Instruments training samples"
    except FileNotFoundError:
        from letter_fast.data import make_synthetic_catalog

        dataset = make_synthetic_catalog(num_items=9922, num_users=20000, max_length=30, seed=0)
        codes = torch.unique(torch.randint(0, 256, (12000, 4), generator=torch.Generator().manual_seed(0)),
                             dim=0)[:9922]
        note = "synthetic catalog (Instruments data absent)"
    vocab = CodeVocabulary.for_codes(codes, num_codes=256)
    return vocab, sequences_from_samples(codes, split_dataset(dataset).train, vocab), note


def strategy_batches(seq, strategy: str, batch_size: int, steps: int, seed: int = 0):
    """``steps`` batches as (index, width) pairs; width = tokens each row is padded to.

    Every strategy gets the same ``steps * batch_size`` random samples (the same work per sample); only how they
    are grouped into batches and padded differs.
    """
    g = torch.Generator().manual_seed(seed)
    subset = torch.randperm(len(seq), generator=g)[: steps * batch_size]
    if strategy == "length-bucketed":   # the trainer's sampler over this subset (one window = the whole subset)
        batches = [subset[b] for b in bucketed_batches(seq.lengths[subset], batch_size, g, window=steps)]
    else:
        batches = list(subset.split(batch_size))
    full = seq.input_ids.shape[1]
    return [(b, full if strategy == "pad-to-81" else int(seq.lengths[b].max())) for b in batches]


def make_case(vocab, seq, strategy, batch_size, steps, device):
    def make():
        model = build_tiger(vocab, seed=0).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
        batches = []
        for index, width in strategy_batches(seq, strategy, batch_size, steps):
            ids, mask, labels = seq.batch(index, device=device)
            if ids.shape[1] < width:      # pad further (the fixed-shape reference)
                pad = width - ids.shape[1]
                ids = torch.nn.functional.pad(ids, (0, pad))
                mask = torch.nn.functional.pad(mask, (0, pad))
            batches.append((ids, mask, labels))
        use_bf16 = device.startswith("cuda")

        def run():
            for ids, mask, labels in batches:
                with torch.autocast("cuda" if use_bf16 else "cpu", dtype=torch.bfloat16, enabled=use_bf16):
                    loss = tiger_loss(model, ids, mask, labels, tau=0.7)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return loss.detach()

        return run

    return make


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per timed call")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    vocab, seq, note = training_sequences(args.data_root)
    params = dict(batch=args.batch_size, steps=args.steps, samples=len(seq))
    strategies = ["pad-to-81", "pad-to-batch-max", "length-bucketed"]
    cases = [Case(NAME, s, params, make_case(vocab, seq, s, args.batch_size, args.steps, args.device), args.device,
                  reference=(s == "pad-to-81")) for s in strategies]
    print(f"{note}; {torch.get_num_threads()} threads", flush=True)
    rows = run_cases(NAME, cases, warmup=1, repeat=args.repeat, min_seconds=0.0, out_dir=args.out)
    real = float(seq.lengths.float().mean())
    lines = [f"## Training throughput ({note}, default TIGER, batch {args.batch_size}, {args.device}, "
             f"{torch.get_num_threads()} threads)", "",
             f"Mean real length {real:.1f} tokens per sample (history codes + EOS); full width "
             f"{seq.input_ids.shape[1]}.", "",
             "| batches | mean padded width | padding share | samples/s | x pad-to-81 |", "|---|---:|---:|---:|---:|"]
    for r, s in zip(rows, strategies):
        widths = [w for _, w in strategy_batches(seq, s, args.batch_size, args.steps)]
        reals = [float(seq.lengths[b].float().mean()) for b, _ in strategy_batches(seq, s, args.batch_size,
                                                                                   args.steps)]
        mean_w = sum(widths) / len(widths)
        pad_share = 1 - sum(reals) / sum(widths)
        if r["median_ms"] is None:
            lines.append(f"| {s} | {mean_w:.1f} | {pad_share:.0%} | failed | |")
            continue
        rate = args.steps * args.batch_size / (r["median_ms"] / 1e3)
        lines.append(f"| {s} | {mean_w:.1f} | {pad_share:.0%} | {rate:.0f} | {r['speedup_vs_reference']:.2f} |")
    text = "\n".join(lines)
    append_markdown(NAME, text, args.out)
    print(text)


if __name__ == "__main__":
    main()
