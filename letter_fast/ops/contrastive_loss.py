"""Fused softmax contrastive loss (InfoNCE): LETTER's collaborative and diversity regularizers.

For anchors ``a_i`` (``[B, d]``), candidates ``c_j`` (``[M, d]``), a positive ``p_i`` and an
optional excluded candidate ``x_i`` per row, and a temperature ``tau``:

    loss_i = -log( exp(<a_i, c_{p_i}> / tau) / sum_{j != x_i} exp(<a_i, c_j> / tau) )

with L2-normalized rows when ``normalize``. LETTER (Wang et al., CIKM 2024, Sec. 3.2) uses it
twice (docs/method.md, sections 2.5 and 2.6):

* collaborative alignment ``L_CF = CE(z_hat @ h^T, arange(B))``: anchors are the quantized
  embeddings, candidates the batch's CF embeddings, positive = the item itself
  (:func:`in_batch_contrastive_loss`);
* code-assignment diversity ``L_div``: anchors are the items' code embeddings ``e_{c_i}``,
  candidates all N codes of the codebook except ``c_i`` itself, positive = another code of the
  same cluster (:func:`codebook_diversity_loss`).

The kernels never build the ``[B, M]`` logits. The forward pass streams the candidates in tiles
with an online log-sum-exp and keeps one value per row (``lse_i``); the backward pass recomputes
the tiles and forms ``W_ij = g_i (softmax_ij - [j = p_i])`` on the fly, so memory stays
``O((B + M) d)`` at every size. Inputs may be float32, float16 or bfloat16 (accumulated in
float32) or float64 (accumulated in float64; reference and cpu backends).

Every backend is deterministic: each output row (and each gradient row) has one owner in the
CPU, Triton and CUDA kernels, which reduce in a fixed order with no atomics.

Layers, as for every op: kernel (csrc/cpu/contrastive_loss_kernel.h, csrc/cuda/contrastive_loss_kernel.cu,
ops/triton/contrastive_loss.py) -> registered ops ``contrastive_loss_forward`` /
``contrastive_loss_backward`` + autograd rule (here) -> functional API (here).
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch

from letter_fast import _native
from letter_fast.ops import backends, checks
from letter_fast.ops.reference.contrastive_loss import contrastive_loss_reference, reduce_rows

OP = "contrastive_loss"
REDUCTIONS = ("mean", "sum", "none")
_DTYPES = checks.FLOAT_DTYPES + (torch.float64,)
_INDEX_DTYPES = (torch.int64, torch.int32)


# ---------------------------------------------------------------- autograd rule (all backends)


def _setup_context(ctx, inputs, output):
    anchors, candidates, positives, exclude, temperature, normalize = inputs
    _, lse = output
    ctx.save_for_backward(anchors, candidates, positives, exclude, lse)
    ctx.temperature, ctx.normalize = temperature, normalize


def _make_backward(backward_op):
    def backward(ctx, grad_loss, grad_lse):
        anchors, candidates, positives, exclude, lse = ctx.saved_tensors
        need_a, need_c = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_a or need_c):
            return None, None, None, None, None, None
        grad_loss = torch.zeros_like(lse) if grad_loss is None else grad_loss
        grad_lse = torch.zeros_like(lse) if grad_lse is None else grad_lse
        grad_a, grad_c = backward_op(grad_loss, grad_lse, anchors, candidates, positives, exclude, lse,
                                     ctx.temperature, ctx.normalize, need_a, need_c)
        return (grad_a if need_a else None), (grad_c if need_c else None), None, None, None, None

    return backward


if _native.has_native():
    torch.library.register_autograd(
        "letter_fast::contrastive_loss_forward",
        _make_backward(torch.ops.letter_fast.contrastive_loss_backward),
        setup_context=_setup_context,
    )


@torch.library.custom_op("letter_fast::contrastive_loss_forward_triton", mutates_args=())
def _triton_forward(anchors: torch.Tensor, candidates: torch.Tensor, positives: torch.Tensor,
                    exclude: Optional[torch.Tensor], temperature: float, normalize: bool
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    from letter_fast.ops.triton.contrastive_loss import contrastive_forward_triton

    return contrastive_forward_triton(anchors, candidates, positives, exclude, temperature, normalize)


@_triton_forward.register_fake
def _(anchors, candidates, positives, exclude, temperature, normalize):
    B = anchors.shape[0]
    return anchors.new_empty(B, dtype=torch.float32), anchors.new_empty(B, dtype=torch.float64)  # lse: float64


@torch.library.custom_op("letter_fast::contrastive_loss_backward_triton", mutates_args=())
def _triton_backward(grad_loss: torch.Tensor, grad_lse: torch.Tensor, anchors: torch.Tensor,
                     candidates: torch.Tensor, positives: torch.Tensor, exclude: Optional[torch.Tensor],
                     lse: torch.Tensor, temperature: float, normalize: bool, anchors_grad: bool,
                     candidates_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from letter_fast.ops.triton.contrastive_loss import contrastive_backward_triton

    return contrastive_backward_triton(grad_loss, grad_lse, anchors, candidates, positives, exclude, lse,
                                       temperature, normalize, anchors_grad, candidates_grad)


@_triton_backward.register_fake
def _(grad_loss, grad_lse, anchors, candidates, positives, exclude, lse, temperature, normalize,
      anchors_grad, candidates_grad):
    return torch.empty_like(anchors), torch.empty_like(candidates)


_triton_forward.register_autograd(_make_backward(_triton_backward), setup_context=_setup_context)


# ---------------------------------------------------------------- validation


def _index(x, name: str, op: str, B: int, M: int, what: str) -> torch.Tensor:
    checks.tensor(x, name, op, 1, "[B]", dtypes=_INDEX_DTYPES, cast_hint=".long()")
    if x.shape[0] != B:
        raise ValueError(f"{op}: {name} must have one entry per anchor (B={B}), got shape {tuple(x.shape)}")
    if not checks.index_range(x, M):
        row = int(((x < 0) | (x >= M)).nonzero()[0])
        raise ValueError(f"{op}: {name} must index {what} in [0, {M}), got {int(x[row])} at row {row}")
    return x.long()


def _validate(anchors, candidates, positives, exclude, temperature, normalize, reduction, names):
    op, a_name, c_name, p_name, x_name = names
    checks.tensor(anchors, a_name, op, 2, "[B, d]", dtypes=_DTYPES)
    checks.tensor(candidates, c_name, op, 2, "[M, d]", dtypes=_DTYPES)
    (B, d), M = anchors.shape, candidates.shape[0]
    if candidates.shape[1] != d:
        raise ValueError(f"{op}: {a_name} have d={d} but {c_name} have d={candidates.shape[1]} "
                         f"(shapes {tuple(anchors.shape)} and {tuple(candidates.shape)})")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"{op}: temperature must be a positive number, got {type(temperature).__name__}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"{op}: temperature must be a finite number > 0, got {temperature}")
    if not isinstance(normalize, bool):
        raise TypeError(f"{op}: normalize must be True or False, got {normalize!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    tensors = dict(anchors=anchors, candidates=candidates)
    if positives is None:
        if M != B:
            raise ValueError(f"{op}: {p_name} defaults to arange(B), which needs as many {c_name} as "
                             f"{a_name} (M == B), got B={B}, M={M}; pass {p_name} explicitly")
        positives = torch.arange(B, device=anchors.device)
    else:
        tensors["positives"] = positives
    if exclude is not None:
        tensors["exclude"] = exclude
    device = checks.same_device(op, **{k: v for k, v in tensors.items() if isinstance(v, torch.Tensor)})
    positives = _index(positives, p_name, op, B, M, c_name)
    if exclude is not None:
        exclude = _index(exclude, x_name, op, B, M, c_name)
        clash = positives == exclude
        if B and bool(clash.any()):
            row = int(clash.nonzero()[0])
            raise ValueError(f"{op}: row {row} excludes its own positive ({p_name}[{row}] = {x_name}[{row}] = "
                             f"{int(positives[row])}); a positive must stay in the softmax")
    checks.finite(anchors, a_name, op)
    checks.finite(candidates, c_name, op)
    if anchors.dtype != candidates.dtype:  # e.g. float16 anchors against float32 candidates
        common = torch.promote_types(anchors.dtype, candidates.dtype)
        anchors, candidates = anchors.to(common), candidates.to(common)
    return anchors, candidates, positives, exclude, float(temperature), device


# ---------------------------------------------------------------- functional API


def _contrastive(anchors, candidates, positives, exclude, temperature, normalize, reduction, backend, names):
    anchors, candidates, positives, exclude, temperature, device = _validate(
        anchors, candidates, positives, exclude, temperature, normalize, reduction, names)
    # the Triton and CUDA kernels hold rows in registers (a width limit) and run float32 math only
    chosen = backends.resolve(OP, backend, device, caller=names[0], d=anchors.shape[1], dtype=anchors.dtype)
    if chosen == "reference":
        return contrastive_loss_reference(anchors, candidates, positives, exclude, temperature, normalize, reduction)
    forward = _triton_forward if chosen == "triton" else torch.ops.letter_fast.contrastive_loss_forward
    rows, _ = forward(anchors, candidates, positives, exclude, temperature, normalize)
    return reduce_rows(rows, reduction)


def contrastive_loss(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    positives: Optional[torch.Tensor] = None,
    exclude: Optional[torch.Tensor] = None,
    *,
    temperature: float = 1.0,
    normalize: bool = False,
    reduction: str = "mean",
    backend: Optional[str] = None,
) -> torch.Tensor:
    """Softmax contrastive loss of ``anchors [B, d]`` against ``candidates [M, d]``.

    ``loss_i = -log( exp(a_i.c_{p_i}/tau) / sum_{j != exclude_i} exp(a_i.c_j/tau) )``

    Args:
        positives: ``[B]`` int64 index of each row's positive candidate; default ``arange(B)``
            (needs ``M == B``: the in-batch setting).
        exclude: ``[B]`` index of a candidate left out of row i's softmax (e.g. the anchor's own
            code), or None. It may not equal the row's positive.
        temperature: ``tau > 0``.
        normalize: L2-normalize the rows of both inputs first (cosine similarity).
        reduction: ``"mean"`` (0 for an empty batch), ``"sum"`` or ``"none"`` (``[B]``).
        backend: ``auto`` (default, or ``LETTER_FAST_BACKEND``), ``reference``, ``cpu``,
            ``triton`` or ``cuda``.

    Returns the loss in float32 (float64 for float64 inputs), differentiable with respect to
    ``anchors`` and ``candidates``; their gradients come back in their own dtypes. Inputs of two
    different float dtypes are promoted to the wider one; non-contiguous inputs are fine.

    Raises ``TypeError`` / ``ValueError`` for wrong types, shapes, devices, indices,
    temperatures and NaN/Inf, and :class:`~letter_fast.ops.backends.BackendUnavailable` for a
    forced backend that cannot run.
    """
    return _contrastive(anchors, candidates, positives, exclude, temperature, normalize, reduction, backend,
                        (OP, "anchors", "candidates", "positives", "exclude"))


def in_batch_contrastive_loss(
    z_hat: torch.Tensor,
    cf_emb: torch.Tensor,
    *,
    temperature: float = 1.0,
    normalize: bool = False,
    reduction: str = "mean",
    backend: Optional[str] = None,
) -> torch.Tensor:
    """LETTER's collaborative regularizer ``L_CF = CE(z_hat @ cf_emb^T / tau, arange(B))``.

    Each item's quantized embedding ``z_hat [B, d]`` is pulled towards its own collaborative
    (CF) embedding ``cf_emb [B, d]`` against the other items of the batch (in-batch negatives).
    LETTER's reference: temperature 1, no normalization, mean over the batch.
    """
    return _contrastive(z_hat, cf_emb, None, None, temperature, normalize, reduction, backend,
                        ("in_batch_contrastive_loss", "z_hat", "cf_emb", "positives", "exclude"))


def codebook_diversity_loss(
    code_emb: torch.Tensor,
    codebook: torch.Tensor,
    codes: torch.Tensor,
    positives: torch.Tensor,
    *,
    temperature: float = 1.0,
    normalize: bool = False,
    reduction: str = "mean",
    backend: Optional[str] = None,
) -> torch.Tensor:
    """LETTER's code-assignment diversity regularizer ``L_div`` for one codebook level.

    ``code_emb [B, d]`` are the items' code embeddings ``e_{c_i}`` (usually ``codebook[codes]``),
    ``codebook [N, d]`` all codes of the level, ``codes [B]`` each item's code ``c_i`` (left out
    of its own softmax) and ``positives [B]`` another code of the same cluster:
    ``L_div = CE(e_{c_i} @ C^T / tau with c_i masked out, positives)``. Gradients reach the
    codebook through both the anchors and the candidates.
    """
    return _contrastive(code_emb, codebook, positives, codes, temperature, normalize, reduction, backend,
                        ("codebook_diversity_loss", "code_emb", "codebook", "positives", "codes"))
