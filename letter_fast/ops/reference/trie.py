"""Reference trie ops: plain PyTorch, obviously correct, on any device.

``trie_build_reference`` (CSR levels from identifiers), ``trie_walk_reference`` (prefix -> node),
``trie_step_reference`` (one trie-masked beam step) and ``trie_constrain_logits_reference`` (the
allowed-token mask of :class:`~letter_fast.genrec.hf.TrieLogitsProcessor`). The CSR layout they
share is described in :mod:`letter_fast.ops.trie`.

Candidate order (shared by every backend, so results match exactly, ties included): a query's
candidates are ranked by score, descending; equal scores go to the lower
``local_row * N + slot``, where ``local_row`` is the beam's row within its query and ``slot`` the
child's position among its parent's children (children are sorted by code). A stable descending
sort over the dense ``[rows, N]`` slot matrix gives exactly that order.
"""

from __future__ import annotations

import math

import torch

NEG_INF = float("-inf")
_INT32_MAX = 2**31 - 1


def searchsorted_segments(values: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, target: torch.Tensor,
                          max_len: int) -> torch.Tensor:
    """Vectorized lower bound of ``target`` in the sorted segments ``values[lo:hi]`` (one per row).

    Returns the position of ``target`` in its segment, or -1 where it is absent. A fixed number of
    bisection rounds (``ceil(log2(max_len + 1))``) keeps it free of host synchronization.
    """
    n = values.numel()
    end = hi
    for _ in range(max(1, int(max_len).bit_length())):
        active = lo < hi
        mid = (lo + hi) // 2
        v = values[mid.clamp(0, max(n - 1, 0))].long() if n else torch.zeros_like(mid)
        right = active & (v < target)
        lo = torch.where(right, mid + 1, lo)
        hi = torch.where(active & ~right, mid, hi)
    found = lo < end
    if n:
        found &= values[lo.clamp(0, n - 1)].long() == target
    return torch.where(found, lo, torch.full_like(lo, -1))


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
        parent, out_code, out_child = (torch.cat([x, x.new_full((Q, pad), -1)], 1)
                                       for x in (parent, out_code, out_child))
        out_score = torch.cat([out_score, out_score.new_full((Q, pad), NEG_INF)], 1)
    return parent, out_code, out_child, out_score


def trie_walk_reference(prefix: torch.Tensor, child_ptr: list, child_code: list, codes_per_level) -> torch.Tensor:
    """Node id at level ``t`` of each prefix ``[Q, t]`` (-1 where it leaves the trie).

    Vectorized bisection in each node's sorted child codes; no host synchronization.
    """
    Q, t = prefix.shape
    node = torch.zeros(Q, dtype=torch.long, device=prefix.device)
    for level in range(t):
        alive = node >= 0
        safe = node.clamp(min=0)
        ptr = child_ptr[level]
        lo = torch.where(alive, ptr[safe].long(), torch.zeros_like(safe))
        hi = torch.where(alive, ptr[safe + 1].long(), torch.zeros_like(safe))
        node = searchsorted_segments(child_code[level], lo, hi, prefix[:, level].long(), codes_per_level[level])
    return node


def trie_build_reference(codes: torch.Tensor, levels: tuple, code_dtype: torch.dtype):
    """CSR levels of the trie over the identifiers ``codes [V, L]`` (codes already range-checked).

    Returns ``(order [V], child_ptr, child_code, leaf_starts)``: ``order`` sorts the rows by
    identifier (stable: a collision group keeps its rows in input order), ``child_ptr[t]`` /
    ``child_code[t]`` the level-t CSR, ``leaf_starts [n_L]`` the first sorted row of each
    identifier. One sort (of a packed int64 key when ``prod(levels) < 2^62``, else a stable
    lexicographic sort), then per level a comparison of neighbouring prefixes and a ``searchsorted``.
    """
    V, L = codes.shape
    device = codes.device
    packable = math.prod(levels) < 2**62
    # 1. Sort the identifiers (stable: a collision group keeps its items in input order).
    if packable:
        key = codes[:, 0].clone()
        for level in range(1, L):
            key.mul_(levels[level]).add_(codes[:, level])
        key, order = torch.sort(key, stable=True)
        sorted_codes = None
    else:
        order = torch.arange(V, device=device)
        for level in reversed(range(L)):
            order = order[torch.sort(codes[order, level], stable=True).indices]
        sorted_codes = codes[order]

    # 2. Per level: where a new prefix starts, its code, and the CSR offsets of its parent level.
    boundary = torch.zeros(V, dtype=torch.bool, device=device)  # "row starts a new prefix of length t"
    boundary[0] = True
    starts_prev = torch.zeros(1, dtype=torch.long, device=device)  # root: one node starting at row 0
    child_ptr, child_code = [], []
    for t in range(1, L + 1):
        if packable:
            div = math.prod(levels[t:])
            prefix = key // div if div > 1 else key
            level_code = prefix % levels[t - 1]
            if V > 1:
                boundary[1:] |= prefix[1:] != prefix[:-1]
            del prefix
        else:
            level_code = sorted_codes[:, t - 1]
            if V > 1:
                boundary[1:] |= level_code[1:] != level_code[:-1]
        starts = boundary.nonzero().squeeze(1)
        n_t = starts.numel()
        if n_t > _INT32_MAX:
            raise ValueError(f"trie_build: level {t} has {n_t} nodes; at most {_INT32_MAX} are supported")
        child_code.append(level_code[starts].to(code_dtype))
        ptr = torch.searchsorted(starts, starts_prev)
        child_ptr.append(torch.cat([ptr, torch.tensor([n_t], device=device)]).to(torch.int32))
        starts_prev = starts
        del level_code
    return order, child_ptr, child_code, starts_prev


def trie_allowed_tokens_reference(node: torch.Tensor, t: int, child_ptr: list, child_code: list, codes_per_level,
                                  token_of: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """``[rows, N_t]`` allowed token ids of rows at the level-``t`` nodes ``node [rows]``.

    A live node allows its children's codes as tokens (``token_of[t, code]``; repeats of its first
    child pad the row); a dead row (-1) and every row once ``t = L`` allow EOS alone (``[rows, 1]``).
    """
    rows = node.numel()
    eos = torch.full((rows, 1), eos_token_id, dtype=torch.long, device=node.device)
    if t >= len(codes_per_level) or rows == 0:
        return eos
    alive = node >= 0
    safe = node.clamp(min=0)
    ptr = child_ptr[t]
    start_child = ptr[safe].long()
    count = torch.where(alive, ptr[safe + 1].long() - start_child, 0)
    slot = torch.arange(codes_per_level[t], device=node.device)
    # slots past a row's children repeat its first child (identical writes in the scatter)
    slot = torch.where(slot[None, :] < count[:, None], slot[None, :], 0)
    n_next = child_code[t].numel()
    child_codes = child_code[t][(start_child[:, None] + slot).clamp(max=max(n_next - 1, 0))]
    tokens = token_of[t][child_codes.long()]
    return torch.where(alive[:, None], tokens, eos)


def generated_codes(input_ids: torch.Tensor, start: int, t: int, code_of: torch.Tensor) -> torch.Tensor:
    """Codes ``[rows, t]`` of the tokens generated after ``start`` (-1 for a token that is no code of its level)."""
    rows = input_ids.shape[0]
    generated = input_ids[:, start:start + t]
    vocab = code_of.shape[1]
    if t == 0:
        return generated.new_zeros(rows, 0)
    return torch.stack([
        torch.where((generated[:, level] >= 0) & (generated[:, level] < vocab),
                    code_of[level, generated[:, level].clamp(0, vocab - 1)], -1)
        for level in range(t)], 1)


def trie_constrain_logits_reference(input_ids: torch.Tensor, scores: torch.Tensor, start: int, child_ptr: list,
                                    child_code: list, codes_per_level, token_of: torch.Tensor,
                                    code_of: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """``scores`` where the token continues a real identifier (or is EOS where that is allowed), -inf elsewhere."""
    t = input_ids.shape[1] - start
    L = len(codes_per_level)
    if t >= L or input_ids.shape[0] == 0:
        node = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
    else:
        codes = generated_codes(input_ids, start, t, code_of)
        node = trie_walk_reference(codes, child_ptr[:t], child_code[:t], codes_per_level)
    allowed = trie_allowed_tokens_reference(node, t, child_ptr, child_code, codes_per_level, token_of, eos_token_id)
    out = torch.full_like(scores, NEG_INF)
    return out.scatter_(1, allowed, scores.gather(1, allowed))
