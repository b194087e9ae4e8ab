"""Sinkhorn-balanced assignment of points to codes: LETTER's last-level code assignment in training.

Given distances ``D [B, N]`` of B points to N codes, entropic optimal transport with uniform
marginals (each point mass 1/B, each code 1/N) finds the plan ``Q = diag(u) K diag(v)``,
``K = exp(-D' / eps)`` with ``D'`` the distances rescaled to [0, 1]; point b takes code
``argmax_n Q[b, n]``. This is LC-Rec's "uniform semantic mapping" (Zheng et al., ICDE 2024),
which LETTER (Wang et al., CIKM 2024) uses so that the last level spreads items evenly over its
codes. The scaling iterations are log-stabilized; the math is in
:func:`letter_fast.ops.reference.sinkhorn_assign.sinkhorn_assign_reference`.

Backends: ``reference`` (any device: a few large tensor ops, which already suit a GPU) and
``cpu`` (csrc/cpu/sinkhorn_assign_kernel.h: one fused pass over the kernel matrix per iteration,
no per-iteration torch ops). Both are deterministic. No gradient: the result is an assignment.
"""

from __future__ import annotations

from typing import Optional

import torch

from letter_fast.ops import backends, checks
from letter_fast.ops.reference.sinkhorn_assign import sinkhorn_assign_reference

OP = "sinkhorn_assign"


def sinkhorn_assign(dist: torch.Tensor, epsilon: float = 0.003, iters: int = 50, absorb_every: int = 10,
                    backend: Optional[str] = None) -> torch.Tensor:
    """Balanced assignment ``[B]`` (int64 code per point) of B points to N codes from ``dist [B, N]``.

    ``epsilon``: the entropic regularization relative to the distance span (smaller: closer to
    the exact balanced assignment, more iterations needed); ``iters`` scaling iterations, the
    scalings folded into the log-potentials every ``absorb_every``. ``dist``: float16, bfloat16,
    float32 or float64, finite. ``backend``: ``auto`` (default, or ``LETTER_FAST_BACKEND``),
    ``reference`` or ``cpu``.
    """
    checks.tensor(dist, "dist", OP, 2, "[B, N]", dtypes=checks.FLOAT_DTYPES + (torch.float64,))
    if dist.shape[1] == 0:
        raise ValueError(f"{OP}: dist has no codes (shape {tuple(dist.shape)}); N must be >= 1")
    if not (epsilon > 0 and iters >= 0 and absorb_every > 0):
        raise ValueError(f"{OP}: need epsilon > 0, iters >= 0, absorb_every > 0; "
                         f"got {epsilon}, {iters}, {absorb_every}")
    checks.finite(dist, "dist", OP)
    chosen = backends.resolve(OP, backend, dist.device)
    if chosen == "cpu":
        return torch.ops.letter_fast.sinkhorn_assign(dist.detach(), float(epsilon), int(iters), int(absorb_every))
    return sinkhorn_assign_reference(dist, epsilon, iters, absorb_every)
