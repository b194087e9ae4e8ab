"""Clustering used by the tokenizer: size-constrained groups of codes for the diversity loss.

The algorithms live in :mod:`letter_fast.nn.kmeans` (the quantizer's size-constrained codebook initialization uses
them too, and :mod:`letter_fast.nn` imports no model package); they are re-exported here. The Sinkhorn-balanced
assignment of the last level is the op :func:`letter_fast.ops.sinkhorn_assign`.

All are vectorized over points (no per-item Python loops).
"""

from __future__ import annotations

from letter_fast.nn.kmeans import (  # noqa: F401  (re-exported)
    constrained_assignment,
    constrained_kmeans,
    greedy_constrained_assignment,
    kmeans,
    kmeans_plus_plus,
    reference_cluster_sizes,
    squared_distances,
)
