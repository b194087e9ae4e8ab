"""Trie ops over semantic identifiers: build, walk, one constrained beam step, constrained logits.

Generative recommenders (TIGER, Rajput et al., NeurIPS 2023; LC-Rec, Zheng et al., ICDE 2024;
LETTER, Wang et al., CIKM 2024) name each item by ``L`` codes ``(c_0, ..., c_{L-1})``,
``c_l in [0, N_l)``, and may only emit identifiers of real items, so decoding walks a prefix trie.

The trie is plain tensors, one CSR per level (the layout :class:`~letter_fast.genrec.ItemIndex`
holds and :class:`TrieTensors` bundles): nodes of level ``t`` are the distinct prefixes of length
``t`` in lexicographic order, so a node's children are contiguous at level ``t + 1`` and sorted by
code; ``child_ptr[t]`` (int32 ``[n_t + 1]``) gives node ``i`` the children
``child_ptr[t][i] .. child_ptr[t][i+1] - 1`` and ``child_code[t]`` (int16, or int32 when some
``N_l > 32767``, ``[n_{t+1}]``) the code that leads to each.

Ops (each has a ``reference`` in :mod:`letter_fast.ops.reference.trie`; which others it has is
in :data:`letter_fast.ops.backends.OPS`):

``trie_build``             identifiers ``[V, L]`` -> CSR levels (cpu: a radix sort and one scan)
``trie_walk``              prefixes ``[Q, t]`` -> node ids at level t (cpu: one pass per row)
``trie_step``              the hot step of constrained beam search (cpu, triton, cuda), below
``trie_constrain_logits``  a ``[rows, vocab]`` score row masked to the allowed tokens (cpu)

**Trie step.** With beam width K the search keeps, after level t, the K best prefixes by summed
log-probability ``s(c_0..c_t) = s(c_0..c_{t-1}) + log p_t(c_t | c_0..c_{t-1})``. For each beam
(a trie node) only its children are candidates; the K best per query are kept. Candidates per
query are at most ``beams x N`` (the codes of one level); nothing of catalog size V is built.
Every backend ranks candidates the same way, ties included (score descending, then the lower
``local_row * N + slot``), so they agree exactly. All trie kernels are deterministic: the GPU
ones reduce with exact integer-key maxima and sorts, no atomics.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch

from letter_fast.ops import backends
from letter_fast.ops.reference.trie import (
    generated_codes,
    trie_allowed_tokens_reference,
    trie_build_reference,
    trie_constrain_logits_reference,
    trie_step_reference,
    trie_walk_reference,
)

_INT32_MAX = 2**31 - 1


class TrieTensors(NamedTuple):
    """The trie's CSR levels (see the module docstring); any object with these attributes serves."""

    child_ptr: list
    child_code: list
    codes_per_level: tuple


def check_codes(codes, name: str, op: str, L: Optional[int] = None) -> torch.Tensor:
    """``codes`` as int64 ``[count, L]``, or a TypeError / ValueError saying what is wrong."""
    if not isinstance(codes, torch.Tensor):
        raise TypeError(f"{op}: {name} must be an integer torch.Tensor [*, L], got {type(codes).__name__}")
    if codes.dim() != 2:
        raise ValueError(f"{op}: {name} must have shape [count, L], got shape {tuple(codes.shape)}")
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise TypeError(f"{op}: {name} must hold integer codes, got {codes.dtype}; cast with .long()")
    if L is not None and codes.shape[1] != L:
        raise ValueError(f"{op}: {name} has {codes.shape[1]} levels per row but the index has L={L}")
    return codes.long()


def check_range(codes: torch.Tensor, levels: Sequence[int], name: str, op: str) -> None:
    """Every ``codes[:, l]`` in ``[0, levels[l])``, else a ValueError naming the first bad entry."""
    if codes.numel() == 0:
        return
    limit = torch.tensor(levels, device=codes.device)
    bad = (codes < 0) | (codes >= limit)
    if bool(bad.any()):
        row, level = (int(i) for i in bad.nonzero()[0].tolist())
        raise ValueError(
            f"{op}: {name}[{row}, {level}] = {int(codes[row, level])} is out of range: level {level} has "
            f"num_codes={levels[level]} (codes must lie in [0, {levels[level]})); {int(bad.sum())} bad value(s) in all"
        )


# ---------------------------------------------------------------- trie_build


def trie_build(codes: torch.Tensor, num_codes: Sequence[int], backend: Optional[str] = None):
    """CSR levels of the trie over identifiers ``codes [V, L]`` (int64, each level in ``[0, num_codes[l])``).

    Returns ``(order [V], child_ptr, child_code, leaf_starts)``: the rows in identifier order (stable),
    the L CSR levels (int32 offsets; int16 codes, int32 when some ``N_l > 32767``) and the first
    sorted row of each identifier (fewer than V of them when identifiers collide). Out-of-range
    codes raise ValueError naming the first one. ``backend``: ``auto``, ``reference`` or ``cpu``
    (identifiers packed into 63 bits, ``V < 2^31``).
    """
    op = "trie_build"
    codes = check_codes(codes, "codes", op)
    levels = tuple(int(n) for n in num_codes)
    V = codes.shape[0]
    key_bits = sum((n - 1).bit_length() for n in levels)
    chosen = backends.resolve(op, backend, codes.device, key_bits=key_bits, rows=V)
    code_dtype = torch.int16 if max(levels) <= 2**15 - 1 else torch.int32
    if chosen == "cpu":  # the kernel checks the range itself, in its one pass
        order, child_ptr, child_code, leaf_starts = torch.ops.letter_fast.trie_build(codes.contiguous(), list(levels))
        return order, child_ptr, [c.to(code_dtype) for c in child_code], leaf_starts
    check_range(codes, levels, "codes", "ItemIndex.from_codes")
    return trie_build_reference(codes, levels, code_dtype)


# ---------------------------------------------------------------- trie_walk


def trie_walk(trie, prefix: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
    """Node id at level t of each prefix ``[Q, t]`` of codes (-1 where it leads to no item).

    ``trie``: an :class:`~letter_fast.genrec.ItemIndex` or a :class:`TrieTensors` (on the prefix's
    device). ``backend``: ``auto`` (the ``cpu`` kernel on CPU tensors where it is built, else the
    vectorized PyTorch walk), ``reference`` or ``cpu``.
    """
    op = "trie_walk"
    prefix = check_codes(prefix, "prefix", op)
    L = len(trie.codes_per_level)
    if prefix.shape[1] > L:
        raise ValueError(f"{op}: prefix has {prefix.shape[1]} codes but the index has only L={L} levels")
    trie_device = trie.child_ptr[0].device
    if prefix.device != trie_device:
        raise ValueError(f"{op}: prefix is on {prefix.device} but the index on {trie_device}; use index.to(device)")
    t = prefix.shape[1]
    chosen = backends.resolve(op, backend, prefix.device)
    if chosen == "cpu":
        return torch.ops.letter_fast.trie_walk(prefix, trie.child_ptr[:t], trie.child_code[:t])
    return trie_walk_reference(prefix, trie.child_ptr[:t], trie.child_code[:t], trie.codes_per_level)


# ---------------------------------------------------------------- trie_step


@torch.library.custom_op("letter_fast::trie_step_triton", mutates_args=())
def _triton_step(node: torch.Tensor, log_probs: torch.Tensor, scores: torch.Tensor, child_ptr: torch.Tensor,
                 child_code: torch.Tensor, beams_per_query: int, k: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from letter_fast.ops.triton.trie import trie_step_triton

    return trie_step_triton(node, log_probs, scores, child_ptr, child_code, beams_per_query, k)


@_triton_step.register_fake
def _(node, log_probs, scores, child_ptr, child_code, beams_per_query, k):
    Q = log_probs.shape[0] // beams_per_query
    long = node.new_empty((Q, k), dtype=torch.long)
    return long, long.clone(), long.clone(), log_probs.new_empty((Q, k), dtype=torch.float32)


def _triton_keys_pad(beams_per_query: int, k: int, N: int) -> int:
    def p2(x):
        return 1 << max(0, int(x - 1).bit_length())

    return p2(beams_per_query) * p2(min(k, N))


def trie_step(
    node: torch.Tensor,
    log_probs: torch.Tensor,
    scores: torch.Tensor,
    child_ptr: torch.Tensor,
    child_code: torch.Tensor,
    beams_per_query: int,
    k: int,
    backend: Optional[str] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One trie-masked beam step: top-``k`` valid continuations per query.

    ``node [R]`` int64 trie nodes of level t (-1 = dead beam), ``log_probs [R, N]`` (float32,
    float16 or bfloat16, any strides), ``scores [R]`` float32 running scores, ``child_ptr`` /
    ``child_code`` the index's level-t CSR (``index.child_ptr[t]``, ``index.child_code[t]``);
    ``R = Q * beams_per_query``. Returns ``(parent, code, child, score)``, each ``[Q, k]``, best
    first: the global row continued, the code appended, the child node at level t + 1 and the
    new score; -1 / -inf where a query has fewer than ``k`` candidates. ``backend``: ``auto``,
    ``reference``, ``cpu``, ``triton`` or ``cuda``.
    """
    op = "trie_step"
    if not isinstance(log_probs, torch.Tensor) or log_probs.dim() != 2:
        got = tuple(log_probs.shape) if isinstance(log_probs, torch.Tensor) else type(log_probs).__name__
        raise ValueError(f"{op}: log_probs must be a [rows, N] tensor, got {got}")
    R, N = log_probs.shape
    if log_probs.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"{op}: log_probs must be float32, float16 or bfloat16, got {log_probs.dtype}")
    if beams_per_query < 1 or R % beams_per_query:
        raise ValueError(f"{op}: rows={R} must be a multiple of beams_per_query={beams_per_query} >= 1")
    if k < 1:
        raise ValueError(f"{op}: k must be >= 1, got {k}")
    if node.shape != (R,) or scores.shape != (R,):
        raise ValueError(f"{op}: node and scores must have shape [rows] = [{R}], "
                         f"got {tuple(node.shape)} and {tuple(scores.shape)}")
    node = node.long()
    scores = scores.float()
    chosen = backends.resolve(op, backend, log_probs.device, k=k, keys=_triton_keys_pad(beams_per_query, k, N))
    if R == 0 or chosen == "reference":  # no rows: nothing to launch, every backend returns the same [0, k]
        return trie_step_reference(node, log_probs, scores, child_ptr, child_code, beams_per_query, k)
    if chosen == "triton":
        return _triton_step(node, log_probs, scores, child_ptr, child_code, beams_per_query, k)
    return torch.ops.letter_fast.trie_step(node, log_probs, scores, child_ptr, child_code, beams_per_query, k)


# ---------------------------------------------------------------- constrained logits


def trie_allowed_tokens(trie, input_ids: torch.Tensor, start: int, token_of: torch.Tensor, code_of: torch.Tensor,
                        eos_token_id: int, backend: Optional[str] = None) -> torch.Tensor:
    """``[rows, W]`` allowed token ids per row after the ``input_ids[:, start:]`` generated so far.

    The generated tokens are mapped to codes (``code_of[l, token]``, -1: not a code of level l),
    walked to their trie node (:func:`trie_walk`, with ``backend``), and the node's children are
    returned as tokens (``token_of[t, code]``); EOS alone once ``t = L`` or for a row whose prefix
    is no item's. Repeats pad a row's list (W = N_t, or 1 once every row is complete).
    """
    t = input_ids.shape[1] - start
    L = len(trie.codes_per_level)
    rows = input_ids.shape[0]
    if t >= L or rows == 0:
        node = torch.zeros(rows, dtype=torch.long, device=input_ids.device)
    else:
        node = trie_walk(trie, generated_codes(input_ids, start, t, code_of), backend=backend)
    return trie_allowed_tokens_reference(node, t, trie.child_ptr, trie.child_code, trie.codes_per_level,
                                         token_of, eos_token_id)


def trie_constrain_logits(trie, input_ids: torch.Tensor, scores: torch.Tensor, start: int, token_of: torch.Tensor,
                          code_of: torch.Tensor, eos_token_id: int, backend: Optional[str] = None
                          ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``scores [rows, vocab]`` with every token that does not continue a real identifier set to -inf.

    ``input_ids [rows, len]`` int64: tokens so far, the codes from ``start`` on; ``token_of [L, N]``
    / ``code_of [L, vocab]`` the two maps between (level, code) and token id. Returns
    ``(out, dead)``: ``dead [rows]`` bool marks rows left with no finite score (None where the
    backend does not compute it: test ``out.amax(-1).isneginf()``). ``backend``: ``auto`` (one
    native pass per row on CPU, no ``[rows, N]`` temporaries), ``reference`` or ``cpu``.
    """
    chosen = backends.resolve("trie_constrain_logits", backend, scores.device)
    if chosen == "cpu":
        return torch.ops.letter_fast.trie_constrain_logits(input_ids, scores, start, list(trie.child_ptr),
                                                           list(trie.child_code), token_of, code_of, eos_token_id)
    out = trie_constrain_logits_reference(input_ids, scores, start, trie.child_ptr, trie.child_code,
                                          trie.codes_per_level, token_of, code_of, eos_token_id)
    return out, None
