"""CPU time of one contrastive_loss forward + backward from a given source tree (for A/B of two builds).

    OMP_NUM_THREADS=1 python benchmarks/contrastive_ab.py <tree with a built letter_fast/_C> B d threads

Prints the median of 5 wall and CPU (``time.process_time``) times of forward + backward and of the forward alone on
the cpu backend, inputs as in bench_contrastive_loss.py. Run it for each build in one session, one after the other:
CPU time at one thread is what stays comparable when the machine is not idle.
"""

from __future__ import annotations

import os
import sys
import time

import torch


def main(tree: str, B: int, d: int, threads: int, repeats: int = 5) -> None:
    sys.path.insert(0, tree)   # the tree's letter_fast (and its _C), not the installed one
    import letter_fast as lf

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(B, d, generator=g) * d**-0.25).requires_grad_(True)
    c = (torch.randn(B, d, generator=g) * d**-0.25).requires_grad_(True)

    def step():
        a.grad = c.grad = None
        lf.contrastive_loss(a, c, backend="cpu").backward()

    def forward():
        with torch.no_grad():
            lf.contrastive_loss(a, c, backend="cpu")

    step()  # warm-up
    name = os.path.basename(tree.rstrip("/"))
    for what, f in (("fwd+bwd", step), ("fwd", forward)):
        wall, cpu = [], []
        for _ in range(repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            f()
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
        w, t = sorted(wall)[repeats // 2], sorted(cpu)[repeats // 2]
        print(f"{name} B={B} d={d} threads={threads} {what}: wall {w * 1e3:.0f} ms, cpu {t * 1e3:.0f} ms")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
