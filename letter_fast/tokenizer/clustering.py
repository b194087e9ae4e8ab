"""Clustering used by the tokenizer: size-constrained groups of codes for the diversity loss (the
k-means they start from lives in :mod:`letter_fast.nn.kmeans`, with the quantizer that initializes
codebooks from it; the Sinkhorn-balanced assignment of the last level is the op
:func:`letter_fast.ops.sinkhorn_assign`).

Both are vectorized over points (no per-item Python loops).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from letter_fast.nn.kmeans import kmeans, kmeans_plus_plus, squared_distances  # noqa: F401  (re-exported)


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
