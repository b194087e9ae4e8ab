"""Trie-constrained beam search over semantic identifiers, exact and flat in catalog size.

Decoding an identifier ``(c_0, ..., c_{L-1})`` with beam width K (TIGER, Rajput et al., 2023;
LC-Rec, Zheng et al., 2024; LETTER, Wang et al., 2024) keeps, after each level t, the K best
prefixes by summed log-probability

    s(c_0..c_t) = s(c_0..c_{t-1}) + log p_t(c_t | c_0..c_{t-1}),

where only prefixes of real items are allowed. The hot part is one **trie step** per level: for
each beam (a trie node), its valid children are the only candidates, each scored by the beam's
running score plus the model's log-probability of the child's code; the K best per query are
kept. Candidates per query are at most ``beams x N`` (the codes of one level); nothing of the
catalog's size V is ever built, so the cost per step does not grow with V.

The step is the op :func:`letter_fast.ops.trie_step`; every backend of it (``reference``, ``cpu``,
``triton``, ``cuda``) ranks candidates the same way, ties included (see
:mod:`letter_fast.ops.trie`), so they agree exactly.
Since beams are distinct trie nodes, the results are distinct identifiers; with
``num_beams >= V`` no valid prefix is ever dropped and the search returns the exact top-k.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from letter_fast.genrec.item_index import ItemIndex
from letter_fast.ops.trie import trie_step

StepFn = Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def _check_log_probs(log_probs, rows: int, N: int, t: int, device: torch.device, check_finite: bool) -> torch.Tensor:
    op = "constrained_beam_search"
    if not isinstance(log_probs, torch.Tensor):
        raise TypeError(f"{op}: step_fn must return a tensor [rows, N] at step {t}, got {type(log_probs).__name__}")
    if log_probs.dim() != 2 or log_probs.shape != (rows, N):
        raise ValueError(f"{op}: step_fn returned log-probs of shape {tuple(log_probs.shape)} at step {t}; expected "
                         f"[rows, N_t] = [{rows}, {N}] (level {t} of the index has N_t={N} codes)")
    if log_probs.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise TypeError(f"{op}: step_fn must return floating log-probs, got {log_probs.dtype} at step {t}")
    if log_probs.device != device:
        raise ValueError(f"{op}: step_fn returned log-probs on {log_probs.device} but the index is on {device}; "
                         "move the index with index.to(device)")
    if log_probs.dtype == torch.float64:
        log_probs = log_probs.float()
    if check_finite and rows and bool((torch.isnan(log_probs) | (log_probs == float("inf"))).any()):
        raise ValueError(f"{op}: step_fn returned NaN or +inf log-probs at step {t}; "
                         "-inf is allowed (it forbids a code)")
    return log_probs


def constrained_beam_search(
    step_fn: StepFn,
    batch_size: int,
    num_beams: int,
    index: ItemIndex,
    num_return: Optional[int] = None,
    backend: Optional[str] = None,
    *,
    return_identifiers: bool = False,
    check_finite: bool = True,
):
    """Beam search over the index's identifiers: every result is an item, results are distinct.

    ``step_fn(prefix, parent) -> log_probs`` is called once per level t = 0..L-1:

    * ``prefix`` LongTensor ``[rows, t]``: the codes decoded so far (``rows = batch_size`` at
      t = 0, ``batch_size * num_beams`` after; query q owns rows ``q * num_beams ..``);
    * ``parent`` None at t = 0, else LongTensor ``[rows]``: the row of the previous call that
      each row extends (reorder a cache with ``past.index_select(0, parent)``);
    * returns ``[rows, N_t]`` float log-probabilities over level t's codes (normalized over
      whatever vocabulary the caller models; the search only masks and sums).

    Beams that do not exist (a query with fewer valid prefixes than ``num_beams``) are carried
    as padding rows: score -inf, codes 0, parent = the query's first row; their log-probs are
    ignored.

    Returns ``(item_ids [batch_size, num_return], scores [batch_size, num_return])``, best first,
    scores = summed log-probabilities (float32); item -1 / score -inf fill the slots of a query
    that has fewer than ``num_return`` reachable items (or only -inf-scored ones). With
    collisions, each identifier is returned once, as its first item; ``return_identifiers=True``
    adds identifier ids ``[batch_size, num_return]`` (expand with
    ``index.items_of_identifier``). ``backend`` picks the trie step kernel (see
    :func:`letter_fast.ops.trie_step`; ``LETTER_FAST_BACKEND`` when None). ``check_finite`` rejects
    NaN/+inf log-probs (one device sync per step).
    """
    op = "constrained_beam_search"
    if not isinstance(index, ItemIndex):
        raise TypeError(f"{op}: index must be an ItemIndex, got {type(index).__name__}")
    if index.num_items == 0:
        raise ValueError(f"{op}: the index is empty")
    if not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"{op}: batch_size must be an int >= 0, got {batch_size!r}")
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"{op}: num_beams must be an int >= 1, got {num_beams!r}")
    num_return = num_beams if num_return is None else num_return
    if not isinstance(num_return, int) or not 1 <= num_return <= num_beams:
        raise ValueError(f"{op}: num_return must be an int in [1, num_beams={num_beams}], got {num_return!r}")
    device = index.device
    Q, K = batch_size, num_beams
    node = torch.zeros(Q, dtype=torch.long, device=device)       # everyone starts at the root
    scores = torch.zeros(Q, dtype=torch.float32, device=device)
    prefix = torch.zeros(Q, 0, dtype=torch.long, device=device)
    parent: Optional[torch.Tensor] = None
    first_row = torch.arange(Q, device=device)[:, None]
    for t in range(index.num_levels):
        rows = node.numel()
        log_probs = _check_log_probs(step_fn(prefix, parent), rows, index.codes_per_level[t], t, device, check_finite)
        beams_in = 1 if t == 0 else K
        par, code, child, score = trie_step(node, log_probs, scores, index.child_ptr[t], index.child_code[t],
                                            beams_in, K, backend=backend)
        alive = par >= 0
        parent = torch.where(alive, par, first_row * beams_in).reshape(-1)
        code = torch.where(alive, code, torch.zeros_like(code)).reshape(-1, 1)
        prefix = torch.cat([prefix.index_select(0, parent), code], dim=1)
        node, scores = child.reshape(-1), score.reshape(-1)
    identifiers = node.reshape(Q, K)[:, :num_return]
    items = index.first_item(identifiers)
    out_scores = scores.reshape(Q, K)[:, :num_return]
    if return_identifiers:
        return items, out_scores, identifiers
    return items, out_scores
