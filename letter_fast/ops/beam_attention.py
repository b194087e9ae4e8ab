"""Decoder self-attention for beam search, read in place from each step's projections.

At decoding step ``t`` of a beam search every row ``r`` (a beam) has one new query and, at each
earlier position ``p < t``, the keys and values its *ancestor* wrote at step ``p``: row
``anc[p, r]`` of that step's projections ``qkv[p] [rows_p, 3, H, d_kv]`` (slots q, k, v).
Position ``t`` is the row itself (``qkv[t]``). Per head ``h``:

    s_p     = <q_{r,h}, k_{p, anc[p, r], h}> + bias[h, p]          (T5 attention: no 1/sqrt(d_kv))
    out_r,h = sum_p softmax_p(s) v_{p, anc[p, r], h}

The usual decoder keeps a key/value cache per beam and re-gathers it through the search's
``parent`` index at every step (``t * rows * 2 * H * d_kv`` values copied per layer and step).
The ``cpu`` kernel (csrc/cpu/beam_attention_kernel.h) follows ``anc`` instead and reads only the
rows it uses; the ``reference`` backend gathers and calls scaled-dot-product attention, and is
what runs on GPUs (where the gather is cheap next to kernel launches).

Both backends are deterministic (the kernel reduces each row in a fixed order).

``anc`` composes across steps: if step ``t`` extends row ``parent[r]`` of step ``t - 1``, then
``anc_t = cat([anc_{t-1}[:, parent], parent[None]])`` (:func:`extend_ancestors`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from letter_fast.ops import backends
from letter_fast.ops.reference.beam_attention import beam_attention_reference

OP = "beam_attention"
_DTYPES = (torch.float32, torch.bfloat16)


def extend_ancestors(anc: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """Ancestor rows ``[t, rows]`` for step ``t`` from those of step ``t - 1`` and the new ``parent [rows]``."""
    return torch.cat([anc[:, parent], parent[None]])


def beam_attention(qkv: Sequence[torch.Tensor], anc: torch.Tensor, bias: torch.Tensor,
                   backend: Optional[str] = None) -> torch.Tensor:
    """Self-attention output ``[rows, H * d_kv]`` of the current step's rows (see the module docstring).

    Args:
        qkv: ``t + 1`` tensors ``[rows_p, 3, H, d_kv]`` (query, key, value projections of steps 0..t), one dtype
            (float32 or bfloat16).
        anc: int64 ``[t, rows]``, the ancestor row at each earlier step (``rows = qkv[-1].shape[0]``).
        bias: ``[H, t + 1]`` additive attention bias of the current position (T5's relative position bias).
        backend: ``auto`` (default, or ``LETTER_FAST_BACKEND``), ``reference`` or ``cpu``.
    """
    if not qkv:
        raise ValueError(f"{OP}: qkv needs at least the current step's projections")
    cur = qkv[-1]
    if any(not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3 or x.shape[2:] != cur.shape[2:]
           or x.dtype != cur.dtype for x in qkv):
        raise ValueError(f"{OP}: every qkv[p] must be a [rows_p, 3, H, d_kv] tensor of one dtype, got "
                         f"{[(tuple(x.shape), x.dtype) for x in qkv if isinstance(x, torch.Tensor)]}")
    if cur.dtype not in _DTYPES:
        raise TypeError(f"{OP}: qkv must be float32 or bfloat16, got {cur.dtype}")
    t, rows = len(qkv) - 1, cur.shape[0]
    if anc.dtype != torch.int64 or tuple(anc.shape) != (t, rows):
        raise ValueError(f"{OP}: anc must be int64 [{t}, {rows}], got {anc.dtype} {tuple(anc.shape)}")
    if tuple(bias.shape) != (cur.shape[2], t + 1):
        raise ValueError(f"{OP}: bias must be [{cur.shape[2]}, {t + 1}], got {tuple(bias.shape)}")
    chosen = backends.resolve(OP, backend, cur.device)
    if chosen == "cpu":
        return torch.ops.letter_fast.beam_attention(list(qkv), anc, bias)
    return beam_attention_reference(qkv, anc, bias)
