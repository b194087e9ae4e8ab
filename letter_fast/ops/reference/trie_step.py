"""Reference trie step and trie walk: plain PyTorch, [rows, N]-sized work, obviously correct.

Candidate order (shared by every backend, so results match exactly, ties included): a query's
candidates are ranked by score, descending; equal scores go to the lower
``local_row * N + slot``, where ``local_row`` is the beam's row within its query and ``slot`` the
child's position among its parent's children (children are sorted by code). A stable descending
sort over the dense ``[rows, N]`` slot matrix gives exactly that order.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def trie_step_reference(
    node: torch.Tensor,        # [R] int64 trie node of each beam at level t (-1: dead beam)
    log_probs: torch.Tensor,   # [R, N] float: log-probabilities of the N codes of level t
    scores: torch.Tensor,      # [R] float32 running scores (summed log-probabilities)
    child_ptr: torch.Tensor,   # [n_t + 1] int32 CSR offsets of level t
    child_code: torch.Tensor,  # [n_{t+1}] int16/int32 codes of level t + 1 nodes
    beams_per_query: int,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``k`` valid continuations per query: ``(parent, code, child, score)``, each ``[Q, k]``.

    ``Q = R / beams_per_query``; query ``q`` owns rows ``q * beams_per_query ..``. A continuation
    of row ``r`` by the child in slot ``j`` of its node scores ``scores[r] + log_probs[r, code]``
    (float32). Only real children with a score above -inf are candidates. ``parent`` is the
    global row; slots beyond the number of candidates hold ``parent = code = child = -1`` and
    ``score = -inf``.
    """
    R, N = log_probs.shape
    B = beams_per_query
    Q = R // B
    dev = log_probs.device
    node = node.long()
    alive = node >= 0
    safe = node.clamp(min=0)
    ptr = child_ptr.long()
    start = torch.where(alive, ptr[safe], torch.zeros_like(safe))
    count = torch.where(alive, ptr[safe + 1] - ptr[safe], torch.zeros_like(safe))
    slot = torch.arange(N, device=dev)
    real = slot[None, :] < count[:, None]                                    # [R, N]
    child = start[:, None] + slot[None, :]
    code = torch.where(real, child_code[child.clamp(max=max(child_code.numel() - 1, 0))].long(), 0) \
        if child_code.numel() else torch.zeros_like(child)
    cand = scores.float()[:, None] + log_probs.float().gather(1, code)
    ok = real & (cand > NEG_INF)
    cand = torch.where(ok, cand, torch.full_like(cand, NEG_INF))
    values, order = torch.sort(cand.reshape(Q, B * N), dim=1, descending=True, stable=True)
    kk = min(k, B * N)
    values, order = values[:, :kk], order[:, :kk]
    picked_ok = ok.reshape(Q, B * N).gather(1, order)
    local_row, picked_slot = order // N, order % N
    row = local_row + torch.arange(Q, device=dev)[:, None] * B
    minus = torch.full_like(order, -1)
    parent = torch.where(picked_ok, row, minus)
    out_child = torch.where(picked_ok, child[row, picked_slot], minus)
    out_code = torch.where(picked_ok, code[row, picked_slot], minus)
    out_score = torch.where(picked_ok, values, torch.full_like(values, NEG_INF))
    if kk < k:
        pad = k - kk
        parent, out_code, out_child = (torch.cat([x, x.new_full((Q, pad), -1)], 1) for x in (parent, out_code, out_child))
        out_score = torch.cat([out_score, out_score.new_full((Q, pad), NEG_INF)], 1)
    return parent, out_code, out_child, out_score


def trie_walk_reference(prefix: torch.Tensor, child_ptr: list, child_code: list, codes_per_level) -> torch.Tensor:
    """Node id at level ``t`` of each prefix ``[Q, t]`` (-1 where it leaves the trie).

    Vectorized bisection in each node's sorted child codes; no host synchronization.
    """
    from letter_fast.genrec.item_index import _searchsorted_segments

    Q, t = prefix.shape
    node = torch.zeros(Q, dtype=torch.long, device=prefix.device)
    for level in range(t):
        alive = node >= 0
        safe = node.clamp(min=0)
        ptr = child_ptr[level]
        lo = torch.where(alive, ptr[safe].long(), torch.zeros_like(safe))
        hi = torch.where(alive, ptr[safe + 1].long(), torch.zeros_like(safe))
        node = _searchsorted_segments(child_code[level], lo, hi, prefix[:, level].long(), codes_per_level[level])
    return node
