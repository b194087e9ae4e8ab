"""Clustering used by the tokenizer: k-means codebook init, size-constrained groups of codes for
the diversity loss, and Sinkhorn-balanced assignment for the last level.

All three are vectorized over points (no per-item Python loops).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def squared_distances(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """``[n, k]`` squared Euclidean distances, clamped at 0 against rounding."""
    return ((x * x).sum(1, keepdim=True) - 2 * x @ centers.T + (centers * centers).sum(1)).clamp_min_(0)


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each new center drawn ~ D(x)^2."""
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=generator, device="cpu").item()
    centers = [x[first]]
    closest = squared_distances(x, x[first:first + 1]).squeeze(1)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than centers: repeat one
            idx = torch.randint(n, (1,), generator=generator).item()
        else:
            idx = torch.multinomial((closest / total).cpu(), 1, generator=generator).item()
        centers.append(x[idx])
        closest = torch.minimum(closest, squared_distances(x, x[idx:idx + 1]).squeeze(1))
    return torch.stack(centers)


def kmeans(x: torch.Tensor, k: int, iters: int = 25, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding. Returns ``(centers [k, d], labels [n])``.

    With fewer points than ``k``, the spare centers are copies of data points (every center is
    still a valid code); empty clusters are re-seeded at the point farthest from its center.
    """
    x = x.detach().float()
    g = torch.Generator().manual_seed(seed)
    centers = kmeans_plus_plus(x, k, g)
    labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for _ in range(iters):
        dist = squared_distances(x, centers)
        labels = dist.argmin(1)
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        empty = counts == 0
        centers = torch.where(empty[:, None], centers, sums / counts.clamp_min(1)[:, None])
        if empty.any() and x.shape[0] >= k:
            far = dist.gather(1, labels[:, None]).squeeze(1).topk(int(empty.sum())).indices
            centers[empty] = x[far]
    return centers, labels


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


def _logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """logsumexp whose terms below e^-80 count as e^-80 (relative effect < 1e-30).

    exp of the very negative log-costs would otherwise produce float32 denormals, which some
    CPUs compute two orders of magnitude slower than normal numbers.
    """
    m = x.amax(dim=dim, keepdim=True)
    return (m + torch.exp((x - m).clamp_min_(-80.0)).sum(dim=dim, keepdim=True).log()).squeeze(dim)


def sinkhorn_assignment(dist: torch.Tensor, epsilon: float = 0.003, iters: int = 50) -> torch.Tensor:
    """Balanced assignment of B points to N codes by entropic optimal transport.

    LC-Rec's "uniform semantic mapping" (Zheng et al., ICDE 2024), used by LETTER for the last
    level in training: the plan ``Q[b, n] = exp((f_b + g_n - D[b, n]) / 1)`` over the cost
    ``C = D / eps`` has uniform marginals (each point mass 1/B, each code 1/N); the code of point
    b is ``argmax_n Q[b, n]``. ``D`` is rescaled to [0, 1] first, so ``epsilon`` means the same at
    every scale. The iterations update the log-potentials ``f`` and ``g`` only (log domain), so
    ``exp(-D / eps)`` (as small as e^-333 at eps = 0.003) never has to be represented: float32 is
    enough, and no [B, N] matrix is rewritten per iteration.
    """
    d = dist.detach().float()
    span = (d.max() - d.min()).clamp_min(1e-12)
    cost = (d - d.min()) / (span * epsilon)                     # C = D / eps, in [0, 1/eps]
    B, N = cost.shape
    log_b, log_n = -float(np.log(B)), -float(np.log(N))
    f = torch.zeros(B, device=d.device)
    g = torch.zeros(N, device=d.device)
    for _ in range(iters):
        g = log_n - _logsumexp(f[:, None] - cost, dim=0)   # columns sum to 1/N
        f = log_b - _logsumexp(g[None, :] - cost, dim=1)   # rows sum to 1/B
    return (g[None, :] - cost).argmax(dim=1)                   # f_b is constant along a row
