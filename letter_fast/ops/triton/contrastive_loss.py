"""Triton kernels for the fused softmax contrastive loss (math: ops/contrastive_loss.py).

Three kernels, none of which stores the [B, M] logits:

* forward: one program owns BLOCK_B anchors and streams the candidates in tiles of BLOCK_M
  (``tl.dot`` with IEEE float32, no TF32), keeping an online log-sum-exp (running max and sum)
  per row; it writes ``lse_i`` (in float64) and ``loss_i = lse_i - s_{i, p_i}``;
* backward for the anchors: one program per BLOCK_B anchors recomputes each tile,
  ``W = coef * exp((s - lse_hi) - lse_lo) - g [j = p_i]`` and accumulates ``W @ C``;
* backward for the candidates: one program per BLOCK_M candidates walks all anchors and
  accumulates ``W^T @ A``. Each output row has one owner: no atomics, deterministic.

The launchers normalize rows (when asked) and fold ``1 / tau`` into the anchors with plain torch
ops, O((B + M) d), and apply the normalization's Jacobian to the gradients the same way.

Why ``lse`` travels in float64 and is split into two float32 parts ``lse_hi + lse_lo``: at low
temperatures ``|lse| ~ |s| / tau`` is large, and its float32 rounding (up to half an ulp, ~2e-6 at
|lse| ~ 40) would scale all of a row's softmax weights by one common ``1 + delta``; where one
candidate dominates, ``W`` near ``P - onehot`` then carries an absolute error ``delta`` where
PyTorch's float32 softmax has ~6e-8 (measured: 20-30x its gradient error at tau = 0.05).
``s - lse_hi`` is exact for the logits that matter, so ``(s - lse_hi) - lse_lo`` keeps float32
accuracy. (Kernel notes: csrc/cpu/contrastive_loss_kernel.h.)
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

NORM_EPS = 1e-12  # as torch.nn.functional.normalize


@triton.jit
def _forward_kernel(
    a_ptr, c_ptr, pos_ptr, excl_ptr, loss_ptr, lse_ptr,
    B, M, D,
    HAS_EXCLUDE: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < D
    a = tl.load(a_ptr + rows[:, None] * D + dims[None, :], mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
    excl = tl.load(excl_ptr + rows, mask=row_ok, other=-1) if HAS_EXCLUDE else rows * 0 - 1
    run_max = tl.full((BLOCK_B,), float("-inf"), dtype=tl.float32)
    run_sum = tl.zeros((BLOCK_B,), dtype=tl.float32)
    for n0 in range(0, M, BLOCK_M):
        cols = n0 + tl.arange(0, BLOCK_M)
        col_ok = cols < M
        c = tl.load(c_ptr + cols[:, None] * D + dims[None, :], mask=col_ok[:, None] & dim_ok[None, :], other=0.0)
        s = tl.dot(a, tl.trans(c), input_precision="ieee")
        keep = col_ok[None, :] & (cols[None, :] != excl[:, None])
        s = tl.where(keep, s, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(s, axis=1))
        # A row whose candidates so far are all masked keeps max -inf: shift by 0 instead.
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        run_sum = run_sum * tl.exp(run_max - shift) + tl.sum(tl.exp(s - shift[:, None]), axis=1)
        run_max = new_max
    log_sum = tl.log(run_sum)
    pos = tl.load(pos_ptr + rows, mask=row_ok, other=0)
    cp = tl.load(c_ptr + pos[:, None] * D + dims[None, :], mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
    positive_logit = tl.sum(a * cp, axis=1)
    tl.store(lse_ptr + rows, run_max.to(tl.float64) + log_sum.to(tl.float64), mask=row_ok)
    # (max - s_p) + log(sum), not lse - s_p: a small loss would inherit lse's float32 rounding.
    tl.store(loss_ptr + rows, (run_max - positive_logit) + log_sum, mask=row_ok)


@triton.jit
def _weights(s, cols, col_ok, excl, pos, lse_hi, lse_lo, coef, g):
    """W_ij = coef_i exp((s_ij - lse_hi_i) - lse_lo_i) - g_i [j = p_i], 0 for masked j."""
    keep = col_ok[None, :] & (cols[None, :] != excl[:, None])
    p = tl.where(keep, tl.exp((s - lse_hi[:, None]) - lse_lo[:, None]), 0.0)
    return coef[:, None] * p - tl.where(cols[None, :] == pos[:, None], g[:, None], 0.0)


@triton.jit
def _grad_anchors_kernel(
    a_ptr, c_ptr, pos_ptr, excl_ptr, hi_ptr, lo_ptr, coef_ptr, g_ptr, out_ptr,
    B, M, D, inv_tau,
    HAS_EXCLUDE: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < D
    a = tl.load(a_ptr + rows[:, None] * D + dims[None, :], mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
    excl = tl.load(excl_ptr + rows, mask=row_ok, other=-1) if HAS_EXCLUDE else rows * 0 - 1
    pos = tl.load(pos_ptr + rows, mask=row_ok, other=-1)
    lse_hi = tl.load(hi_ptr + rows, mask=row_ok, other=0.0)
    lse_lo = tl.load(lo_ptr + rows, mask=row_ok, other=0.0)
    coef = tl.load(coef_ptr + rows, mask=row_ok, other=0.0)
    g = tl.load(g_ptr + rows, mask=row_ok, other=0.0)
    acc = tl.zeros((BLOCK_B, BLOCK_D), dtype=tl.float32)
    for n0 in range(0, M, BLOCK_M):
        cols = n0 + tl.arange(0, BLOCK_M)
        col_ok = cols < M
        c = tl.load(c_ptr + cols[:, None] * D + dims[None, :], mask=col_ok[:, None] & dim_ok[None, :], other=0.0)
        s = tl.dot(a, tl.trans(c), input_precision="ieee")
        w = _weights(s, cols, col_ok, excl, pos, lse_hi, lse_lo, coef, g)
        acc += tl.dot(w, c, input_precision="ieee")
    tl.store(out_ptr + rows[:, None] * D + dims[None, :], acc * inv_tau, mask=row_ok[:, None] & dim_ok[None, :])


@triton.jit
def _grad_candidates_kernel(
    a_ptr, c_ptr, pos_ptr, excl_ptr, hi_ptr, lo_ptr, coef_ptr, g_ptr, out_ptr,
    B, M, D,
    HAS_EXCLUDE: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    cols = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    col_ok = cols < M
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < D
    c = tl.load(c_ptr + cols[:, None] * D + dims[None, :], mask=col_ok[:, None] & dim_ok[None, :], other=0.0)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for i0 in range(0, B, BLOCK_B):
        rows = i0 + tl.arange(0, BLOCK_B)
        row_ok = rows < B
        a = tl.load(a_ptr + rows[:, None] * D + dims[None, :], mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
        excl = tl.load(excl_ptr + rows, mask=row_ok, other=-1) if HAS_EXCLUDE else rows * 0 - 1
        pos = tl.load(pos_ptr + rows, mask=row_ok, other=-1)
        lse_hi = tl.load(hi_ptr + rows, mask=row_ok, other=0.0)
        lse_lo = tl.load(lo_ptr + rows, mask=row_ok, other=0.0)
        coef = tl.load(coef_ptr + rows, mask=row_ok, other=0.0)
        g = tl.load(g_ptr + rows, mask=row_ok, other=0.0)
        s = tl.dot(a, tl.trans(c), input_precision="ieee")
        w = _weights(s, cols, col_ok, excl, pos, lse_hi, lse_lo, coef, g)
        # the anchors carry 1/tau already, so this is dL/dc directly
        acc += tl.dot(tl.trans(w), a, input_precision="ieee")
    tl.store(out_ptr + cols[:, None] * D + dims[None, :], acc, mask=col_ok[:, None] & dim_ok[None, :])


def _blocks(d: int) -> tuple[int, int, int]:
    block_d = max(16, triton.next_power_of_2(d))
    block = 64 if block_d <= 64 else (32 if block_d <= 256 else 16)
    return block, block, block_d


def _unit_rows(x: torch.Tensor, normalize: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """float32 rows, L2-normalized when asked, and each row's norm clamped at eps (else None)."""
    x = x.float()
    if not normalize:
        return x.contiguous(), None
    norm = x.norm(dim=1, keepdim=True).clamp_min(NORM_EPS)
    return (x / norm).contiguous(), norm


def _unit_rows_backward(unit: torch.Tensor, norm: Optional[torch.Tensor], grad: torch.Tensor) -> torch.Tensor:
    """Gradient of x / max(||x||, eps) given the unit rows and the clamped norms."""
    if norm is None:
        return grad
    projected = grad - unit * (unit * grad).sum(dim=1, keepdim=True)
    clamped = norm <= NORM_EPS  # below eps the map is x / eps: linear, no projection
    return torch.where(clamped, grad, projected) / norm


def _prepare(anchors, candidates, positives, exclude, temperature, normalize):
    a, a_norm = _unit_rows(anchors, normalize)
    c, c_norm = _unit_rows(candidates, normalize)
    a_scaled = (a / temperature).contiguous()
    excl = exclude.contiguous() if exclude is not None else positives  # unused when HAS_EXCLUDE is False
    return a, a_norm, a_scaled, c, c_norm, positives.contiguous(), excl


def contrastive_forward_triton(anchors, candidates, positives, exclude, temperature, normalize):
    """Per-row loss (float32 [B]) and log-sum-exp (float64 [B]); inputs already validated."""
    B, d = anchors.shape
    M = candidates.shape[0]
    loss = torch.empty(B, dtype=torch.float32, device=anchors.device)
    lse = torch.empty(B, dtype=torch.float64, device=anchors.device)
    if B == 0:
        return loss, lse
    _, _, a_scaled, c, _, pos, excl = _prepare(anchors, candidates, positives, exclude, temperature, normalize)
    block_b, block_m, block_d = _blocks(d)
    _forward_kernel[(triton.cdiv(B, block_b),)](
        a_scaled, c, pos, excl, loss, lse, B, M, d,
        HAS_EXCLUDE=exclude is not None, BLOCK_B=block_b, BLOCK_M=block_m, BLOCK_D=block_d,
    )
    return loss, lse


def contrastive_backward_triton(grad_loss, grad_lse, anchors, candidates, positives, exclude, lse,
                                temperature, normalize, anchors_grad, candidates_grad):
    """Gradients for anchors and candidates in their dtypes (zeros where not asked for)."""
    B, d = anchors.shape
    M = candidates.shape[0]
    grad_a = torch.zeros(B, d, dtype=torch.float32, device=anchors.device)
    grad_c = torch.zeros(M, d, dtype=torch.float32, device=anchors.device)
    if B > 0 and (anchors_grad or candidates_grad):
        a, a_norm, a_scaled, c, c_norm, pos, excl = _prepare(
            anchors, candidates, positives, exclude, temperature, normalize)
        g = grad_loss.float().contiguous()
        coef = (g + grad_lse.float()).contiguous()
        lse_hi = lse.float()
        lse_lo = (lse.double() - lse_hi.double()).float()  # lse = lse_hi + lse_lo
        block_b, block_m, block_d = _blocks(d)
        common = dict(HAS_EXCLUDE=exclude is not None, BLOCK_B=block_b, BLOCK_M=block_m, BLOCK_D=block_d)
        if anchors_grad:
            _grad_anchors_kernel[(triton.cdiv(B, block_b),)](
                a_scaled, c, pos, excl, lse_hi, lse_lo, coef, g, grad_a, B, M, d, 1.0 / temperature, **common)
            grad_a = _unit_rows_backward(a, a_norm, grad_a)
        if candidates_grad:
            _grad_candidates_kernel[(triton.cdiv(M, block_m),)](
                a_scaled, c, pos, excl, lse_hi, lse_lo, coef, g, grad_c, B, M, d, **common)
            grad_c = _unit_rows_backward(c, c_norm, grad_c)
    return grad_a.to(anchors.dtype), grad_c.to(candidates.dtype)
