"""Clustering used by the tokenizer: k-means codebook init and size-constrained groups of codes for
the diversity loss (the Sinkhorn-balanced assignment of the last level is the op
:func:`letter_fast.ops.sinkhorn_assign`).

Both are vectorized over points (no per-item Python loops).
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
