"""Fused nearest-code residual quantization: the RQ-VAE encoder step of LETTER and TIGER.

Given latents ``z [B, d]`` and ``L`` codebooks ``C_l [N, d]``, greedy residual quantization
(LETTER, Wang et al., CIKM 2024, Sec. 3.1; RQ-VAE, Lee et al., CVPR 2022) picks per level

    c_l = argmin_n ||r_{l-1} - e_{l,n}||^2,   r_l = r_{l-1} - e_{l,c_l},   r_0 = z

(ties to the lowest index, like ``torch.argmin``) and reconstructs ``z_hat = sum_l e_{l,c_l}``.

The fused kernels make one pass over ``z`` and keep each row's residual in registers; the
``[B, N]`` distance matrix of the textbook version is never stored. Layers, as for every op:
kernel (csrc/, ops/triton/) -> registered op + autograd rule (here) -> functional API (here).

Gradients: ``z_hat`` is differentiable with respect to ``codebooks`` (it is a sum of gathered
rows); the argmin is piecewise constant, so ``z`` gets no gradient through it. Training code
that needs the straight-through estimator or the commitment loss uses :func:`residual_code_embeddings`;
:func:`residual_dequantize` maps codes back to ``z_hat``.

Determinism: the codes and ``z_hat`` are deterministic on every backend. The codebook gradient
is accumulated with ``index_add_``, which on CUDA tensors adds with atomics, so its float32 sums
may differ in the last bits between runs unless ``torch.use_deterministic_algorithms(True)``
(then torch takes its deterministic path). On CPU it is sequential and exact to repeat.
"""

from __future__ import annotations

from typing import Optional

import torch

from letter_fast import _native
from letter_fast.ops import backends, checks
from letter_fast.ops.reference.residual_quantize import code_embeddings, residual_quantize_reference

OP = "residual_quantize"


def _codebook_grad(codes: torch.Tensor, codebooks: torch.Tensor, grad_z_hat: torch.Tensor) -> torch.Tensor:
    """d z_hat / d codebooks: scatter-add the output gradient into each level's chosen rows."""
    L, N, d = codebooks.shape
    flat = (codes + torch.arange(L, device=codes.device) * N).reshape(-1)
    grad = torch.zeros(L * N, d, dtype=torch.float32, device=codebooks.device)
    grad.index_add_(0, flat, grad_z_hat.float().repeat_interleave(L, dim=0))
    return grad.view(L, N, d).to(codebooks.dtype)


def _setup_context(ctx, inputs, output):
    _, codebooks = inputs
    codes, _ = output
    ctx.mark_non_differentiable(codes)
    ctx.save_for_backward(codes, codebooks)


def _backward(ctx, grad_codes, grad_z_hat):
    codes, codebooks = ctx.saved_tensors
    grad_cb = None
    if ctx.needs_input_grad[1] and grad_z_hat is not None:
        grad_cb = _codebook_grad(codes, codebooks, grad_z_hat)
    return None, grad_cb


if _native.has_native():
    torch.library.register_autograd(
        "letter_fast::residual_quantize", _backward, setup_context=_setup_context
    )


@torch.library.custom_op("letter_fast::residual_quantize_triton", mutates_args=())
def _triton_op(z: torch.Tensor, codebooks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from letter_fast.ops.triton.residual_quantize import residual_quantize_triton

    return residual_quantize_triton(z, codebooks)


@_triton_op.register_fake
def _(z, codebooks):
    return z.new_empty((z.shape[0], codebooks.shape[0]), dtype=torch.long), z.new_empty(z.shape)


_triton_op.register_autograd(_backward, setup_context=_setup_context)


def _validate(z, codebooks) -> torch.device:
    checks.tensor(z, "z", OP, 2, "[B, d]")
    checks.tensor(codebooks, "codebooks", OP, 3, "[L, N, d]")
    L, N, d = codebooks.shape
    if d != z.shape[1]:
        raise ValueError(f"{OP}: z has d={z.shape[1]} but codebooks have d={d} (shape {tuple(codebooks.shape)})")
    if L == 0 or N == 0:
        raise ValueError(f"{OP}: codebooks must hold L >= 1 levels of N >= 1 codes, got shape {tuple(codebooks.shape)}")
    device = checks.same_device(OP, z=z, codebooks=codebooks)
    checks.finite(z, "z", OP)
    checks.finite(codebooks, "codebooks", OP)
    return device


def residual_quantize(
    z: torch.Tensor, codebooks: torch.Tensor, *, backend: Optional[str] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual-quantize ``z [B, d]`` with ``codebooks [L, N, d]``.

    Returns ``codes [B, L]`` (int64) and ``z_hat [B, d]`` in ``z``'s dtype (accumulated in
    float32). Inputs may be float32, float16 or bfloat16 and non-contiguous; distances are
    computed in float32. ``backend``: ``auto`` (default, or ``LETTER_FAST_BACKEND``),
    ``reference``, ``cpu``, ``triton`` or ``cuda``.

    Raises ``TypeError`` / ``ValueError`` for wrong types, shapes, devices and NaN/Inf, and
    :class:`~letter_fast.ops.backends.BackendUnavailable` for a forced backend that cannot run.
    """
    device = _validate(z, codebooks)
    # the CUDA and Triton kernels keep each row's residual in registers: a width limit (backends.OPS)
    chosen = backends.resolve(OP, backend, device, d=z.shape[1])
    if chosen == "reference":
        return residual_quantize_reference(z, codebooks)
    if chosen == "triton":
        return _triton_op(z, codebooks)
    return torch.ops.letter_fast.residual_quantize(z, codebooks)


def residual_code_embeddings(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """Per-level code embeddings ``[B, L, d]``: ``out[b, l] = codebooks[l, codes[b, l]]``.

    Differentiable with respect to ``codebooks``; with the residuals
    ``r_{l-1} = z - sum_{j<l} e_{j,c_j}`` it gives the RQ-VAE codebook and commitment losses
    ``mse(e_{c_l}, sg(r_{l-1})) + mu * mse(sg(e_{c_l}), r_{l-1})``.
    """
    _validate_codes(codes, codebooks, "residual_code_embeddings")
    return code_embeddings(codes, codebooks)


def residual_dequantize(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """``z_hat [B, d] = sum_l codebooks[l, codes[:, l]]``, summed in float32, in the codebooks' dtype."""
    _validate_codes(codes, codebooks, "residual_dequantize")
    return code_embeddings(codes, codebooks.float()).sum(dim=1).to(codebooks.dtype)


def _validate_codes(codes, codebooks, op: str) -> None:
    checks.tensor(codebooks, "codebooks", op, 3, "[L, N, d]")
    checks.tensor(codes, "codes", op, 2, "[B, L]", dtypes=(torch.int64, torch.int32), cast_hint=".long()")
    L, N, _ = codebooks.shape
    if codes.shape[1] != L:
        raise ValueError(f"{op}: codes have {codes.shape[1]} levels but codebooks have L={L}")
    checks.same_device(op, codes=codes, codebooks=codebooks)
    if not checks.index_range(codes, N):
        bad = ((codes < 0) | (codes >= N)).nonzero()[0].tolist()
        raise ValueError(f"{op}: codes must lie in [0, {N}), got {int(codes[bad[0], bad[1]])} at index {tuple(bad)}")
