"""Collision-free identifiers: no two items may share a code sequence.

Residual quantization by nearest code leaves some items on the same identifier (the LETTER
release: 0.25% of Instruments, 4.15% of Yelp), and identical embeddings can never be separated by
any assignment rule. We re-assign the *last-level* code inside each prefix group (items sharing
codes 1..L-1) that holds a collision: a min-cost matching (Hungarian algorithm) of the group's
items to distinct last-level codes, cost = squared distance of the item's last residual to the
code. Items of collision-free groups keep their nearest code.

:func:`resolve_collisions` runs the vectorized implementation of :mod:`letter_fast.tokenizer.assign` (all groups
of one size matched at once, no Python loop over groups; 1e7 items in seconds). When a group holds more items
than there are codes, no matching exists: that group's identifiers gain extra levels of at most N codes each
(assign.py says how), the others get zeros there. :func:`resolve_collisions_reference` is the original
implementation (one scipy matching per group; and when any group exceeds N, no matching at all but one extra
level holding each item's rank among identical identifiers, which can exceed N codes), kept to test against.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment


def collision_rate(codes: torch.Tensor) -> float:
    """Share of items whose identifier is also another item's (0 = all unique)."""
    if codes.shape[0] == 0:
        return 0.0
    _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).float().mean())


def duplicate_rank(codes: torch.Tensor) -> torch.Tensor:
    """For each item, its rank among the items with the same identifier (0 for the first)."""
    _, inverse = torch.unique(codes, dim=0, return_inverse=True)
    order = torch.argsort(inverse, stable=True)
    sorted_groups = inverse[order]
    first = torch.ones_like(sorted_groups, dtype=torch.bool)
    first[1:] = sorted_groups[1:] != sorted_groups[:-1]
    group_start = torch.cummax(torch.where(first, torch.arange(len(order)), torch.zeros_like(order)), 0).values
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order)) - group_start
    return rank


def resolve_collisions(codes: torch.Tensor, last_residuals, last_codebook: torch.Tensor) -> torch.Tensor:
    """Collision-free codes ``[V, L]`` (``[V, L + E]`` when a prefix group exceeds N items), a LongTensor.

    ``last_residuals [V, d]``: each item's residual before the last level; ``last_codebook [N, d]``.
    Same codes as :func:`resolve_collisions_reference` wherever no colliding group exceeds N and every group's
    optimal matching is unique (:mod:`letter_fast.tokenizer.assign`).
    """
    from letter_fast.tokenizer.assign import reassign_collisions

    return torch.from_numpy(reassign_collisions(codes, last_residuals, last_codebook))


def resolve_collisions_reference(codes: torch.Tensor, last_residuals: torch.Tensor,
                                 last_codebook: torch.Tensor) -> torch.Tensor:
    """The original algorithm: collision-free codes ``[V, L]`` (or ``[V, L + 1]`` when a prefix group exceeds N).

    ``last_residuals [V, d]``: each item's residual before the last level; ``last_codebook [N, d]``.
    """
    codes = codes.clone()
    last_residuals, last_codebook = last_residuals.detach(), last_codebook.detach()
    V, L = codes.shape
    N = last_codebook.shape[0]
    if V == 0 or collision_rate(codes) == 0.0:
        return codes
    _, full_id, full_counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    colliding = full_counts[full_id] > 1
    _, prefix_id, prefix_counts = torch.unique(codes[:, : L - 1], dim=0, return_inverse=True, return_counts=True)
    if int(prefix_counts[prefix_id[colliding]].max()) > N:
        rank = duplicate_rank(codes)
        return torch.cat([codes, rank[:, None]], dim=1)
    cost_all = (
        (last_residuals.float() ** 2).sum(1, keepdim=True) - 2 * last_residuals.float() @ last_codebook.float().T
        + (last_codebook.float() ** 2).sum(1)
    )
    # One matching per prefix group that contains a collision (a few groups; each is small).
    for group in torch.unique(prefix_id[colliding]).tolist():
        members = (prefix_id == group).nonzero().squeeze(1)
        rows, cols = linear_sum_assignment(cost_all[members].double().cpu().numpy())
        codes[members[torch.as_tensor(rows)], L - 1] = torch.as_tensor(cols, dtype=codes.dtype)
    return codes
