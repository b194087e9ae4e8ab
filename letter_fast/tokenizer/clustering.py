"""Clustering used by the tokenizer: size-constrained groups of codes for the diversity loss and
Sinkhorn-balanced assignment for the last level (the k-means they start from lives in
:mod:`letter_fast.nn.kmeans`, with the quantizer that initializes codebooks from it).

Both are vectorized over points (no per-item Python loops).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from letter_fast.nn.kmeans import kmeans, kmeans_plus_plus, squared_distances  # noqa: F401  (re-exported)
from letter_fast.ops import backends, checks


def constrained_assignment(dist: torch.Tensor, min_size: int, max_size: int) -> torch.Tensor:
    """Assign n points to k clusters minimizing total distance with every size in [min, max].

    Exact: a min-cost assignment (Hungarian, scipy) of points to ``k * max_size`` cluster slots,
    the first ``min_size`` slots of each cluster made mandatory by a cost bonus larger than any
    distance span. Meant for small problems (codes of one codebook: n = N, k = 10).
    """
    n, k = dist.shape
    if k * max_size < n or k * min_size > n:
        raise ValueError(f"cannot split {n} points into {k} clusters of {min_size}..{max_size}")
    d = dist.detach().double().cpu().numpy()
    bonus = (d.max() - d.min() + 1.0) * n
    slots = np.repeat(d, max_size, axis=1)  # slot j of cluster c at column c * max_size + j
    mandatory = (np.arange(k * max_size) % max_size) < min_size
    slots[:, mandatory] -= bonus
    rows, cols = linear_sum_assignment(slots)
    labels = np.empty(n, dtype=np.int64)
    labels[rows] = cols // max_size
    return torch.from_numpy(labels).to(dist.device)


def constrained_kmeans(x: torch.Tensor, k: int, min_size: int, max_size: int, iters: int = 10,
                       seed: int = 0) -> torch.Tensor:
    """Size-constrained k-means (Bradley, Bennett & Demiriz 2000): labels ``[n]`` with every
    cluster size in ``[min_size, max_size]``; Lloyd updates with the exact constrained assignment."""
    x = x.detach().float()
    centers, _ = kmeans(x, k, iters=5, seed=seed)
    labels = None
    for _ in range(iters):
        new = constrained_assignment(squared_distances(x, centers), min_size, max_size)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        counts = torch.bincount(labels, minlength=k).clamp_min(1)
        centers = torch.zeros_like(centers).index_add_(0, labels, x) / counts[:, None]
    return labels


def sinkhorn_assignment(dist: torch.Tensor, epsilon: float = 0.003, iters: int = 50,
                        absorb_every: int = 10, backend: Optional[str] = None) -> torch.Tensor:
    """Balanced assignment ``[B]`` of B points to N codes from their distances ``dist [B, N]``.

    Entropic optimal transport with uniform marginals, log-stabilized; the math is in
    :func:`sinkhorn_assignment_reference`. ``backend``: ``auto`` (default), ``reference`` or
    ``cpu`` (the fused kernel of csrc/cpu/sinkhorn_assign_kernel.h: one pass over the kernel matrix per
    iteration, no per-iteration torch ops). GPU tensors run the reference, whose few large ops
    already suit a GPU.
    """
    op = "sinkhorn_assignment"
    checks.tensor(dist, "dist", op, 2, "[B, N]", dtypes=checks.FLOAT_DTYPES + (torch.float64,))
    if dist.shape[1] == 0:
        raise ValueError(f"{op}: dist has no codes (shape {tuple(dist.shape)}); N must be >= 1")
    if not (epsilon > 0 and iters >= 0 and absorb_every > 0):
        raise ValueError(f"{op}: need epsilon > 0, iters >= 0, absorb_every > 0; got {epsilon}, {iters}, {absorb_every}")
    checks.finite(dist, "dist", op)
    chosen = backends.resolve_cpu_kernel_op(op, backend, dist.device)
    if chosen == "cpu":
        return torch.ops.letter_fast.sinkhorn_assign(dist.detach(), float(epsilon), int(iters), int(absorb_every))
    return sinkhorn_assignment_reference(dist, epsilon, iters, absorb_every)


def sinkhorn_assignment_reference(dist: torch.Tensor, epsilon: float = 0.003, iters: int = 50,
                                  absorb_every: int = 10) -> torch.Tensor:
    """Balanced assignment of B points to N codes by entropic optimal transport (PyTorch).

    LC-Rec's "uniform semantic mapping" (Zheng et al., ICDE 2024), used by LETTER for the last
    level in training: the plan ``Q = diag(u) K diag(v)``, ``K = exp(-C)``, ``C = D / eps``, is
    scaled to uniform marginals (each point mass 1/B, each code 1/N); point b takes code
    ``argmax_n Q[b, n]``. ``D`` is rescaled to [0, 1] first, so ``epsilon`` means the same at
    every scale.

    Log-domain stabilized (Schmitzer, SIAM J. Sci. Comput. 2019): the scalings live in
    log-potentials ``f, g`` and the kernel is ``K = exp(f_b + g_n - C_bn)``. At eps = 0.003 the
    raw kernel spans e^-333, beyond float32; starting from the row and column minima of ``C``
    every row and column of ``K`` holds a 1, the plain scaling iterations (two matrix-vector
    products each) run on it, and every ``absorb_every`` iterations the scalings are folded back
    into ``f, g`` and ``K`` is rebuilt. Float32 throughout, a handful of ``exp`` passes instead
    of two per iteration.
    """
    if dist.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=dist.device)
    d = dist.detach().float()
    span = (d.max() - d.min()).clamp_min(1e-12)
    cost = (d - d.min()).div_(span * epsilon)
    B, N = cost.shape
    f = -cost.amin(dim=1)                                   # every row of K has a 1
    g = -(cost + f[:, None]).amin(dim=0)                    # ... and every column
    a, b = 1.0 / B, 1.0 / N
    kernel = torch.empty_like(cost)  # rebuilt in place: fresh [B, N] buffers cost page faults

    def rebuild() -> None:
        # Entries below e^-80 (< 1e-34 of a row's largest) are kept at e^-80: exp would otherwise
        # produce float32 denormals, and CPUs multiply those two orders of magnitude slower.
        torch.add(f[:, None], g[None, :], out=kernel)
        kernel.sub_(cost).clamp_min_(-80.0).exp_()

    rebuild()
    u = torch.ones(B, device=d.device, dtype=d.dtype)
    v = torch.ones(N, device=d.device, dtype=d.dtype)
    for it in range(iters):
        v = b / (kernel.T @ u).clamp_min(1e-30)             # columns sum to 1/N
        u = a / (kernel @ v).clamp_min(1e-30)               # rows sum to 1/B
        if (it + 1) % absorb_every == 0 and it + 1 < iters:
            f, g = f + u.log(), g + v.log()
            rebuild()
            u.fill_(1.0)
            v.fill_(1.0)
    # Q[b, n] = u_b K_bn v_n; u_b is constant along a row
    return kernel.mul_(v[None, :]).argmax(dim=1)
