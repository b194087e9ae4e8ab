"""Benchmark: Sinkhorn-balanced assignment, the cpu kernel against the PyTorch reference.

The tokenizer calls it once per training batch for the last level: ``B`` residuals against the
``N = 256`` codes of that level, ``epsilon = 0.003``, 50 iterations (the training defaults). Both
backends are timed in the same run at the same sizes; ``agree`` in the note is the fraction of
points given the same code (float32 in both, different summation order: only near-ties differ).
Sizes are modest because the benchmark machine is shared. Usage::

    python benchmarks/bench_sinkhorn_assign.py            # B = 1024 .. 16384
    python benchmarks/bench_sinkhorn_assign.py --quick    # a smoke run at small sizes
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import Case, append_markdown, quick_args, run_cases, shared_machine_note  # noqa: E402
from letter_fast.ops import backends, sinkhorn_assign  # noqa: E402
from letter_fast.ops.reference import sinkhorn_assign_reference  # noqa: E402

NAME = "sinkhorn_assign"


def distances(B: int, N: int, d: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cdist(torch.randn(B, d, generator=g), torch.randn(N, d, generator=g)) ** 2


def cases(sizes, N: int = 256) -> list[Case]:
    out = []
    cpu_why = backends.reason(NAME, "cpu", torch.device("cpu"))
    for B in sizes:
        params = dict(B=B, N=N)
        dist = distances(B, N, seed=B)
        out.append(Case(NAME, "reference", params, lambda dist=dist: lambda: sinkhorn_assign_reference(dist),
                        reference=True))
        if cpu_why is None:
            agree = float((sinkhorn_assign(dist, backend="cpu") == sinkhorn_assign_reference(dist)).float().mean())
            out.append(Case(NAME, "letter_fast-cpu", params,
                            lambda dist=dist: lambda: sinkhorn_assign(dist, backend="cpu"), note=f"agree {agree:.4f}"))
        else:
            print(f"{NAME}: the cpu backend does not run here: {cpu_why}", file=sys.stderr)
    return out


def main(argv=None) -> None:
    args = quick_args(__doc__, argv)
    sizes = [256, 1024] if args.quick else [1024, 4096, 16384]
    run_cases(NAME, cases(sizes), repeat=3 if args.quick else 7, min_seconds=0.05 if args.quick else 0.3,
              plot_x="B", out_dir=args.out)
    note = shared_machine_note("benchmarks/bench_sinkhorn_assign.py", args.quick, sizes="B <= 16384, N = 256")
    append_markdown(NAME, note, args.out)

if __name__ == "__main__":
    main()
