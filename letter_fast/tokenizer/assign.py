"""Collision-free identifiers at catalog scale (1e7 items): vectorized re-assignment, no Python loop over groups.

Same rule as :mod:`letter_fast.tokenizer.collisions` where that rule is defined, plus a bounded fallback where it
is not. Items sharing the first ``L - 1`` codes form a *prefix group*; a group that holds a collision (two items on
one full identifier) is re-assigned as a whole:

* **group of m <= N items**: a min-cost matching of its items to distinct last-level codes, cost = squared
  distance of the item's last residual ``r_{L-1}`` to the code, ``||r||^2 - 2 r.e + ||e||^2`` in float32 (the
  reference's expression), solved in float64. The solver is the shortest-augmenting-path Hungarian method
  (Jonker & Volgenant 1987; the rectangular form of Crouse, IEEE TAES 2016) run on all groups of one size at
  once: each step is one numpy operation over ``[groups, N]`` arrays. Groups of more than 8 items are padded to
  the next power of two (at most N) with rows of cost 0, which leave the optimum of the real rows unchanged.
  When the optimal matching of a group is unique this is exactly the reference's (scipy) answer; when several
  matchings have the same cost (identical items) either may be returned.
* **group of exact_max_group < m <= N items** (default 16): the exact matching costs ``O(m^2 N)`` per group, too
  much for a catalog where thousands of groups hold hundreds of items (an under-trained tokenizer at 1e7 items).
  Greedy instead: the item nearest to a code keeps it; the displaced items, in order of their cost to their
  nearest code (ties: code, then item id), take the nearest code still free, one item of every group per round.
  Collision-free, cost at least the optimum's; ``exact_max_group=N`` gives the exact matching everywhere.
* **group of m > N items**: no matching to distinct last-level codes exists. The group gets ``E`` extra levels,
  the smallest ``E >= 1`` with ``m <= N^(E+1)``, and every last-level code takes at most ``C = N^E`` of its
  items: an item keeps its nearest code unless ``C`` items nearer to that code already hold it (ranked by cost,
  then item id); the items over capacity (in code, then item-id order) move to the codes with room, in code
  order. The extra levels are the item's rank inside its new identifier written in base N (most significant
  digit first), so **every extra level holds at most N codes** and every level stays a vocabulary of N tokens
  for TIGER / LC-Rec. Identifiers of the other groups get zeros on the extra levels; the number of extra levels
  is the largest ``E`` of any group.

Differences from the reference (``collisions.resolve_collisions_reference``): groups of more than
``exact_max_group`` items are placed greedily, not optimally (above); and there, one prefix group over N made
*every* group skip the matching and appended the rank among identical identifiers as one extra level, whose
vocabulary was the largest such group (1,643 codes in a 1e6-item run, more than N). Here groups of at most N items
are always matched, and only groups over N use extra levels, bounded as above. Zero collisions in every case.

Memory: the costs are computed only for members of colliding groups, in chunks of ``rows_per_chunk`` rows
(``rows_per_chunk x N`` float64); the codes are sorted once as packed int64 keys.
"""

from __future__ import annotations

import numpy as np
import torch

_SMALL_EXACT = 8  # groups up to this size are solved at their own size; larger ones are padded to a power of two


def _as_numpy_codes(codes) -> np.ndarray:
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be a [V, L] array, got shape {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise TypeError(f"codes must be integers, got {codes.dtype}")
    return codes.astype(np.int64, copy=False)


def row_keys(codes: np.ndarray) -> np.ndarray:
    """One int64 per row, equal exactly when the rows are equal, increasing with the rows' lexicographic order.

    Mixed-radix packing when the ranges fit in 63 bits (L = 4, N = 256 uses 32); else the rank among the
    distinct rows (``np.unique(axis=0)``, slower).
    """
    V, L = codes.shape
    if L == 0 or V == 0:
        return np.zeros(V, dtype=np.int64)
    if codes.min() < 0:
        raise ValueError("codes must be non-negative")
    radix = codes.max(axis=0).astype(np.int64) + 1
    if float(np.sum(np.log2(radix.astype(np.float64)))) < 62.5:
        key = codes[:, 0].copy()
        for level in range(1, L):
            key *= radix[level]
            key += codes[:, level]
        return key
    _, inverse = np.unique(codes, axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def collision_rate_np(codes) -> float:
    """Share of items whose identifier another item also has (vectorized, one sort)."""
    codes = _as_numpy_codes(codes)
    if codes.shape[0] == 0:
        return 0.0
    key = np.sort(row_keys(codes))
    dup = np.zeros(key.shape[0], dtype=bool)
    same = key[1:] == key[:-1]
    dup[1:] |= same
    dup[:-1] |= same
    return float(dup.mean())


def batched_assignment(cost: np.ndarray) -> np.ndarray:
    """Min-cost matchings of ``G`` independent problems ``cost [G, m, n]`` (m <= n): ``cols [G, m]``, distinct per
    problem, minimizing ``sum_i cost[g, i, cols[g, i]]``.

    Shortest augmenting paths with row and column potentials (Jonker-Volgenant, rectangular form of Crouse 2016):
    rows are added one at a time; a Dijkstra search over reduced costs ``c_ij - u_i - v_j`` from the new row
    finds the cheapest path to a free column, the potentials are updated so that reduced costs stay >= 0, and the
    path is flipped. All G problems advance together; a problem whose search has ended waits (masked).
    Among equal reduced costs a free column is preferred, then the lowest index.
    """
    cost = np.asarray(cost, dtype=np.float64)
    G, m, n = cost.shape
    if m > n:
        raise ValueError(f"batched_assignment: {m} rows cannot take distinct columns out of {n}")
    u = np.zeros((G, m))
    v = np.zeros((G, n))
    row4col = np.full((G, n), -1, dtype=np.int64)
    col4row = np.full((G, m), -1, dtype=np.int64)
    every = np.arange(G)
    for cur in range(m):
        shortest = np.full((G, n), np.inf)
        path = np.full((G, n), -1, dtype=np.int64)
        seen_col = np.zeros((G, n), dtype=bool)
        seen_row = np.zeros((G, m), dtype=bool)
        row = np.full(G, cur, dtype=np.int64)
        min_val = np.zeros(G)
        sink = np.full(G, -1, dtype=np.int64)
        active = every
        while active.size:
            ia = row[active]
            seen_row[active, ia] = True
            reduced = min_val[active, None] + cost[active, ia] - u[active, ia][:, None] - v[active]
            sc = seen_col[active]
            sh = shortest[active]
            better = (~sc) & (reduced < sh)
            sh = np.where(better, reduced, sh)
            shortest[active] = sh
            pa = path[active]
            pa[better] = np.broadcast_to(ia[:, None], better.shape)[better]
            path[active] = pa
            masked = np.where(sc, np.inf, sh)
            lowest = masked.min(axis=1)
            ties = masked == lowest[:, None]
            free_ties = ties & (row4col[active] == -1)
            has_free = free_ties.any(axis=1)
            j = np.where(has_free, free_ties.argmax(axis=1), ties.argmax(axis=1))
            min_val[active] = lowest
            seen_col[active, j] = True
            owner = row4col[active, j]
            done = owner == -1
            sink[active[done]] = j[done]
            row[active[~done]] = owner[~done]
            active = active[~done]
        # potentials: reduced costs stay >= 0 and are 0 along the matching
        u[:, cur] += min_val
        others = seen_row.copy()
        others[:, cur] = False
        if others.any():
            g_idx, r_idx = np.nonzero(others)
            u[g_idx, r_idx] += min_val[g_idx] - shortest[g_idx, col4row[g_idx, r_idx]]
        g_idx, c_idx = np.nonzero(seen_col)
        v[g_idx, c_idx] -= min_val[g_idx] - shortest[g_idx, c_idx]
        # flip the augmenting path
        col = sink.copy()
        active = every
        while active.size:
            ja = col[active]
            ia = path[active, ja]
            row4col[active, ja] = ia
            previous = col4row[active, ia]
            col4row[active, ia] = ja
            col[active] = previous
            active = active[ia != cur]
    return col4row


def _last_level_costs(rows: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """``[len(rows), N]`` float32 costs ``||r||^2 - 2 r.e + ||e||^2`` (the reference's expression)."""
    r = torch.as_tensor(rows, dtype=torch.float32)
    e = torch.as_tensor(codebook, dtype=torch.float32)
    return ((r ** 2).sum(1, keepdim=True) - 2 * r @ e.T + (e ** 2).sum(1)).numpy()


def _gather_residuals(residuals, members: np.ndarray):
    if not isinstance(residuals, np.memmap):
        return np.asarray(residuals[members], dtype=np.float32)
    # a memory map reads sorted rows faster; members arrive sorted by group, not by row
    order = np.argsort(members, kind="stable")
    out = np.empty((members.shape[0], residuals.shape[1]), dtype=np.float32)
    out[order] = np.asarray(residuals[members[order]], dtype=np.float32)
    return out


def reassign_collisions(codes, last_residuals, last_codebook, *, exact_max_group: int = 16,
                        rows_per_chunk: int = 32768, return_stats: bool = False):
    """Collision-free codes ``[V, L + E]`` (``E = 0`` unless a prefix group holds more than N items).

    ``codes [V, L]``: nearest-code identifiers; ``last_residuals [V, d]`` (array, memmap or tensor): each item's
    residual before the last level; ``last_codebook [N, d]``. Groups of up to ``exact_max_group`` items are matched
    exactly, larger ones (up to N) greedily (see the module's docstring; ``exact_max_group >= N``: all exactly).
    Returns an int64 numpy array (and, with ``return_stats``, a dict: colliding groups, items matched exactly,
    items placed greedily, items in groups over N, extra levels).
    """
    codes = _as_numpy_codes(codes)
    V, L = codes.shape
    if isinstance(last_codebook, torch.Tensor):
        last_codebook = last_codebook.detach().cpu().float().numpy()
    codebook = np.asarray(last_codebook, dtype=np.float32)
    N = codebook.shape[0]
    if isinstance(last_residuals, torch.Tensor):
        last_residuals = last_residuals.detach().cpu().float().numpy()
    if last_residuals.shape[0] != V:
        raise ValueError(f"reassign_collisions: {last_residuals.shape[0]} residual rows for {V} items")
    if V and int(codes[:, -1].max()) >= N:
        raise ValueError(f"reassign_collisions: last-level codes must lie in [0, {N})")
    out = codes.copy()
    stats = {"colliding_groups": 0, "matched_items": 0, "greedy_items": 0, "items_in_groups_over_n": 0,
             "extra_levels": 0}
    if V == 0:
        return (out, stats) if return_stats else out

    full_key = row_keys(codes)
    prefix_key = row_keys(codes[:, : L - 1]) if L > 1 else np.zeros(V, dtype=np.int64)
    # one stable sort by the full identifier, which orders the prefixes too (row_keys is lexicographic): both
    # groupings are runs of it, items in id order inside a run
    order = np.argsort(full_key, kind="stable")
    fk, pk = full_key[order], prefix_key[order]
    full_start = np.ones(V, dtype=bool)
    full_start[1:] = fk[1:] != fk[:-1]
    pre_start = np.ones(V, dtype=bool)
    pre_start[1:] = pk[1:] != pk[:-1]
    full_id = np.cumsum(full_start) - 1
    full_size = np.bincount(full_id)
    pre_id = np.cumsum(pre_start) - 1
    pre_size = np.bincount(pre_id)
    pre_first = np.flatnonzero(pre_start)
    colliding_group = np.zeros(pre_size.shape[0], dtype=bool)
    colliding_group[pre_id[full_size[full_id] > 1]] = True
    stats["colliding_groups"] = int(colliding_group.sum())
    if not colliding_group.any():
        return (out, stats) if return_stats else out

    # ---- groups of more than exact_max_group (and at most N) items: greedy, in rounds across groups
    big = np.flatnonzero(colliding_group & (pre_size > exact_max_group) & (pre_size <= N))
    if big.size:
        _greedy_groups(big, pre_first, pre_size, order, last_residuals, codebook, out, L, rows_per_chunk)
        stats["greedy_items"] = int(pre_size[big].sum())
    # ---- groups of at most exact_max_group items: batched exact matching, bucketed by (padded) size
    small = np.flatnonzero(colliding_group & (pre_size <= min(N, exact_max_group)))
    if small.size:
        size = pre_size[small]
        padded = np.where(size <= _SMALL_EXACT, size,
                          np.minimum(N, 2 ** np.ceil(np.log2(np.maximum(size, 1))).astype(np.int64)))
        for width in np.unique(padded).tolist():
            groups = small[padded == width]
            per_chunk = max(1, rows_per_chunk // width)
            for start in range(0, groups.size, per_chunk):
                chunk = groups[start:start + per_chunk]
                _match_chunk(chunk, width, pre_first, pre_size, order, last_residuals, codebook, out, L)
            stats["matched_items"] += int(pre_size[groups].sum())

    # ---- groups of more than N items: capacity N^E per last-level code, E extra levels
    large = np.flatnonzero(pre_size > N)
    if large.size:
        extra = _spread_large_groups(large, pre_first, pre_size, order, last_residuals, codebook, out, L, N)
        stats["items_in_groups_over_n"] = int(pre_size[large].sum())
        stats["extra_levels"] = int(extra.shape[1])
        out = np.concatenate([out, extra], axis=1)
    return (out, stats) if return_stats else out


def _match_chunk(groups, width, pre_first, pre_size, order, residuals, codebook, out, L) -> None:
    G = groups.size
    size = pre_size[groups]
    slot = np.arange(width)
    real = slot[None, :] < size[:, None]                                   # [G, width]
    positions = pre_first[groups][:, None] + slot[None, :]
    members = order[positions[real]]                                       # item ids, group by group
    N = codebook.shape[0]
    cost = np.zeros((G, width, N))
    cost[real] = _last_level_costs(_gather_residuals(residuals, members), codebook)
    cols = batched_assignment(cost)
    out[members, L - 1] = cols[real]


def _sort_by(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """Indices sorting by ``(major, minor)``, ties in the input's order (two stable sorts: much faster than
    ``np.lexsort`` on millions). Inputs here come in (group, code, item id) order, so ties break by those."""
    by_minor = np.argsort(minor, kind="stable")
    return by_minor[np.argsort(major[by_minor], kind="stable")]


def _group_members(groups, pre_first, pre_size, order):
    m = pre_size[groups]
    group_of = np.repeat(np.arange(groups.size), m)
    positions = np.repeat(pre_first[groups], m) + (np.arange(m.sum()) - np.repeat(np.cumsum(m) - m, m))
    return order[positions], group_of


def _greedy_groups(groups, pre_first, pre_size, order, residuals, codebook, out, L, rows_per_chunk) -> None:
    """Distinct last-level codes for groups too large for the exact matching (m <= N): in each group the item nearest
    to a code keeps it; the others, in order of their cost to their nearest code (ties: code, item id), take the nearest
    code still free, one item per group per round (rounds vectorized across groups)."""
    N = codebook.shape[0]
    members, group_of = _group_members(groups, pre_first, pre_size, order)
    code = out[members, L - 1].copy()
    rows = _gather_residuals(residuals, members)
    own = ((rows - codebook[code]) ** 2).sum(1)
    by = _sort_by(group_of * N + code, own)
    first = np.ones(by.size, dtype=bool)
    first[1:] = (group_of[by][1:] != group_of[by][:-1]) | (code[by][1:] != code[by][:-1])
    keep = np.zeros(by.size, dtype=bool)
    keep[by[first]] = True
    taken = np.zeros((groups.size, N), dtype=bool)
    taken[group_of[keep], code[keep]] = True
    displaced = np.flatnonzero(~keep)
    displaced = displaced[_sort_by(group_of[displaced], own[displaced])]
    g_d = group_of[displaced]
    start = np.ones(displaced.size, dtype=bool)
    start[1:] = g_d[1:] != g_d[:-1]
    turn = np.arange(displaced.size) - np.maximum.accumulate(np.where(start, np.arange(displaced.size), 0))
    by_turn = np.argsort(turn, kind="stable")
    bounds = np.searchsorted(turn[by_turn], np.arange(int(turn.max(initial=-1)) + 2))
    for k in range(bounds.size - 1):   # round k: the k-th displaced item of every group (<= N rounds)
        pick = displaced[by_turn[bounds[k]:bounds[k + 1]]]
        for lo in range(0, pick.size, rows_per_chunk):
            part = pick[lo:lo + rows_per_chunk]
            cost = _last_level_costs(rows[part], codebook)
            cost[taken[group_of[part]]] = np.inf
            choice = cost.argmin(1)
            code[part] = choice
            taken[group_of[part], choice] = True
    out[members, L - 1] = code


def _spread_large_groups(large, pre_first, pre_size, order, residuals, codebook, out, L, N) -> np.ndarray:
    m = pre_size[large]
    members, group_of = _group_members(large, pre_first, pre_size, order)
    E = np.ones(large.size, dtype=np.int64)
    while True:  # smallest E with m <= N^(E+1)
        over = m > N ** (E + 1)
        if not over.any():
            break
        E[over] += 1
    capacity = N ** E                                                       # per last-level code, per group
    code = out[members, L - 1].copy()
    rows = _gather_residuals(residuals, members)
    own = ((rows - codebook[code]) ** 2).sum(1)                             # cost to the nearest (current) code
    # rank inside (group, code) by cost, then item id
    by = _sort_by(group_of * N + code, own)
    g_s, c_s = group_of[by], code[by]
    start = np.ones(by.size, dtype=bool)
    start[1:] = (g_s[1:] != g_s[:-1]) | (c_s[1:] != c_s[:-1])
    run_start = np.maximum.accumulate(np.where(start, np.arange(by.size), 0))
    rank = np.empty(by.size, dtype=np.int64)
    rank[by] = np.arange(by.size) - run_start
    keep = rank < capacity[group_of]
    # free places per (group, code), cumulated over codes and groups into one increasing table
    load = np.zeros((large.size, N), dtype=np.int64)
    np.add.at(load, (group_of[keep], code[keep]), 1)
    free = capacity[:, None] - load
    cum = np.cumsum(free.reshape(-1))
    moved = np.flatnonzero(~keep)
    if moved.size:
        g_m = group_of[moved]
        first_of_group = np.ones(moved.size, dtype=bool)
        first_of_group[1:] = g_m[1:] != g_m[:-1]
        k = np.arange(moved.size) - np.maximum.accumulate(np.where(first_of_group, np.arange(moved.size), 0))
        before = np.where(g_m > 0, cum[g_m * N - 1], 0)                    # free places of earlier groups
        flat = np.searchsorted(cum, before + k, side="right")
        code[moved] = flat - g_m * N
    out[members, L - 1] = code
    # rank inside the new identifier (group, code): kept items first by cost, then the moved ones by item id
    moved_flag = ~keep
    by = _sort_by((group_of * N + code) * 2 + moved_flag, np.where(moved_flag, np.inf, own))
    g_s, c_s = group_of[by], code[by]
    start = np.ones(by.size, dtype=bool)
    start[1:] = (g_s[1:] != g_s[:-1]) | (c_s[1:] != c_s[:-1])
    run_start = np.maximum.accumulate(np.where(start, np.arange(by.size), 0))
    rank = np.empty(by.size, dtype=np.int64)
    rank[by] = np.arange(by.size) - run_start
    levels = int(E.max())
    extra = np.zeros((out.shape[0], levels), dtype=np.int64)
    digits = rank.copy()
    for level in range(levels - 1, -1, -1):  # base-N digits, most significant first
        extra[members, level] = digits % N
        digits //= N
    return extra
