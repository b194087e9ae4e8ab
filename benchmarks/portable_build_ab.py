"""A/B timing of the CPU kernels under two builds of letter_fast._C (benchmarks/results/portable_build.md).

Each call of this script times every kernel once in this process (median of --reps timed calls after
warm-up) and prints one JSON line; the build is whatever ``letter_fast`` is on the path. Run it
alternately for two builds (A B A B ...) and compare medians over the runs, so that the load of a
shared machine falls on both alike:

    export OMP_NUM_THREADS=1
    for i in 1 2 3 4 5; do
      PYTHONPATH=/path/to/native-build python benchmarks/portable_build_ab.py --label native
      PYTHONPATH=$PWD python benchmarks/portable_build_ab.py --label portable
    done > ab.jsonl
    python benchmarks/portable_build_ab.py --summarize ab.jsonl

Sizes: residual_quantize B=10000 d=32 L=4 N=256 (the README's table row); contrastive_loss
forward+backward B=M=1024 d=32, normalized, temperature 0.07; sinkhorn_assign B=1024 N=256, 50
iterations; trie_step 64 queries x 20 beams over N=256 codes on a random 3-level trie of 20000
items; one LETTER tokenizer training step (benchmarks/bench_tokenizer_step.py, batch 1024).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch


def _median_ms(fn, reps: int, warmup: int = 3) -> float:
    """Median CPU time of one call in ms (process time: all threads' CPU seconds). On a machine
    shared with other jobs, wall time mostly measures waiting for a core; with OMP_NUM_THREADS=1
    the CPU time of the one thread is what the instruction set changes."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        times.append((time.process_time() - t0) * 1e3)
    return statistics.median(times)


def measure(reps: int) -> dict:
    import letter_fast  # noqa: F401  (registers torch.ops.letter_fast)

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads())
    from letter_fast import _native

    ops = torch.ops.letter_fast
    g = torch.Generator().manual_seed(0)
    out = {"isa": _native.build_info().get("cpu_simd"), "flags": _native.build_info().get("cxx_flags")}

    z, cb = torch.randn(10000, 32, generator=g), torch.randn(4, 256, 32, generator=g)
    out["residual_quantize"] = _median_ms(lambda: ops.residual_quantize(z, cb), reps)

    a, c = torch.randn(1024, 32, generator=g), torch.randn(1024, 32, generator=g)
    pos = torch.arange(1024)

    def contrastive():
        loss, lse = ops.contrastive_loss_forward(a, c, pos, None, 0.07, True)
        ops.contrastive_loss_backward(torch.ones(1024), torch.zeros(1024), a, c, pos, None, lse, 0.07, True,
                                      True, True)

    out["contrastive_loss_fwd_bwd"] = _median_ms(contrastive, reps)

    dist = torch.rand(1024, 256, generator=g)
    out["sinkhorn_assign"] = _median_ms(lambda: ops.sinkhorn_assign(dist, 0.05, 50, 10), reps)

    from letter_fast.genrec.item_index import ItemIndex

    flat = torch.randperm(256**3, generator=g)[:20000]  # distinct identifiers
    codes = torch.stack([flat // 65536, flat // 256 % 256, flat % 256], 1)
    index = ItemIndex.from_codes(codes, num_codes=[256, 256, 256])
    ptr, code = index.child_ptr[1], index.child_code[1]
    nodes = torch.randint(0, ptr.numel() - 1, (64 * 20,), generator=g)
    lp = torch.log_softmax(torch.randn(64 * 20, 256, generator=g), -1)
    scores = torch.zeros(64 * 20)
    out["trie_step"] = _median_ms(lambda: ops.trie_step(nodes, lp, scores, ptr, code, 20, 20), reps * 4)

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.bench_tokenizer_step import make_step

    step = make_step("letter_fast")()
    out["tokenizer_step"] = _median_ms(step, max(3, reps // 3), warmup=1)
    return out


def summarize(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    keys = [k for k in rows[0] if k not in ("label", "isa", "flags")]
    lines = ["| kernel | " + " | ".join(f"{lab} (CPU ms, median of {sum(r['label'] == lab for r in rows)} runs)"
                                      for lab in labels) + " | ratio |",
             "|---|" + "---|" * len(labels) + "---|"]
    for k in keys:
        med = [statistics.median(r[k] for r in rows if r["label"] == lab) for lab in labels]
        ratio = med[-1] / med[0] if len(med) > 1 else 1.0
        lines.append(f"| {k} | " + " | ".join(f"{m:.3f}" for m in med) + f" | {ratio:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="build")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--summarize", type=Path, help="print the table of a file of this script's JSON lines")
    args = parser.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return
    print(json.dumps({"label": args.label, **measure(args.reps)}))


if __name__ == "__main__":
    main()
