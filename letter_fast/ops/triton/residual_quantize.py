"""Triton kernel for fused nearest-code residual quantization (math: ops/residual_quantize.py).

One program owns BLOCK_B rows and keeps their residuals in registers for all L levels. Each
level walks the codebook in tiles of BLOCK_N codes: a [BLOCK_B, BLOCK_N] tile of dot products
(``tl.dot`` with IEEE float32, no TF32, so codes match the float32 reference), a running
min/argmin per row, and nothing of size [B, N] in memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_DIM = 256  # widest latent kept in registers


@triton.jit
def _residual_quantize_kernel(
    z_ptr, stride_row, stride_col,
    cb_ptr, norms_ptr, codes_ptr, zhat_ptr,
    B, D, N, L,
    BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < D
    mask = row_ok[:, None] & col_ok[None, :]
    r = tl.load(z_ptr + rows[:, None] * stride_row + cols[None, :] * stride_col, mask=mask, other=0.0)
    r = r.to(tl.float32)
    z_hat = tl.zeros((BLOCK_B, BLOCK_D), dtype=tl.float32)
    for level in range(0, L):
        best = tl.full((BLOCK_B,), float("inf"), dtype=tl.float32)
        best_idx = tl.zeros((BLOCK_B,), dtype=tl.int32)
        for n0 in range(0, N, BLOCK_N):
            codes_n = n0 + tl.arange(0, BLOCK_N)
            code_ok = codes_n < N
            e = tl.load(
                cb_ptr + (level * N + codes_n)[:, None] * D + cols[None, :],
                mask=code_ok[:, None] & col_ok[None, :], other=0.0,
            )
            norms = tl.load(norms_ptr + level * N + codes_n, mask=code_ok, other=float("inf"))
            dots = tl.dot(r, tl.trans(e), input_precision="ieee")
            dist = norms[None, :] - 2.0 * dots
            tile_min = tl.min(dist, axis=1)
            # lowest index among the tile's minima; strict '<' across tiles keeps ties low
            tile_arg = tl.min(tl.where(dist == tile_min[:, None], codes_n[None, :], N), axis=1)
            better = tile_min < best
            best = tl.where(better, tile_min, best)
            best_idx = tl.where(better, tile_arg, best_idx)
        tl.store(codes_ptr + rows * L + level, best_idx.to(tl.int64), mask=row_ok)
        chosen = tl.load(cb_ptr + (level * N + best_idx)[:, None] * D + cols[None, :], mask=mask, other=0.0)
        r = r - chosen
        z_hat = z_hat + chosen
    tl.store(zhat_ptr + rows[:, None] * D + cols[None, :], z_hat.to(zhat_ptr.dtype.element_ty), mask=mask)


def residual_quantize_triton(z: torch.Tensor, codebooks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the kernel; inputs are already validated (d <= MAX_DIM, same device)."""
    B, d = z.shape
    L, N, _ = codebooks.shape
    codes = torch.empty((B, L), dtype=torch.long, device=z.device)
    z_hat = torch.empty((B, d), dtype=z.dtype, device=z.device)
    if B == 0:
        return codes, z_hat
    cb = codebooks.float().contiguous()
    norms = cb.square().sum(-1).contiguous()
    block_d = max(16, triton.next_power_of_2(d))
    block_b = 64 if block_d <= 64 else 32
    block_n = 64 if block_d <= 64 else 32
    grid = (triton.cdiv(B, block_b),)
    _residual_quantize_kernel[grid](
        z, z.stride(0), z.stride(1), cb, norms, codes, z_hat, B, d, N, L,
        BLOCK_B=block_b, BLOCK_D=block_d, BLOCK_N=block_n,
    )
    return codes, z_hat
