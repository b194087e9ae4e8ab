"""Reference residual quantization: the textbook loop, one [B, N] distance matrix per level."""

from __future__ import annotations

import torch


def residual_quantize_reference(
    z: torch.Tensor, codebooks: torch.Tensor, distance: str = "matmul"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy residual quantization in float32 (RQ-VAE encoding, LETTER Sec. 3.1).

    For l = 1..L: ``c_l = argmin_n ||r - e_{l,n}||^2``, ``r <- r - e_{l,c_l}`` with ``r = z`` at
    the start; returns ``codes [B, L]`` (int64) and ``z_hat = sum_l e_{l,c_l}`` in ``z``'s dtype.
    ``z_hat`` is differentiable with respect to ``codebooks`` (the argmin is not).

    ``distance`` picks how the [B, N] matrix is formed: ``"matmul"`` as
    ``||r||^2 - 2 r e^T + ||e||^2``, ``"cdist"`` with ``torch.cdist`` (both are what a PyTorch
    user would write; the benchmark times both).
    """
    r = z.detach().float()
    cb = codebooks.detach().float()
    codes = []
    for level in range(cb.shape[0]):
        e = cb[level]
        if distance == "cdist":
            dist = torch.cdist(r, e)
        elif distance == "matmul":
            dist = (r * r).sum(1, keepdim=True) - 2.0 * (r @ e.T) + (e * e).sum(1)
        else:
            raise ValueError(f"distance must be 'matmul' or 'cdist', got {distance!r}")
        c = dist.argmin(dim=1) if r.shape[0] else torch.zeros(0, dtype=torch.long, device=r.device)
        codes.append(c)
        r = r - e[c]
    codes = torch.stack(codes, dim=1)
    z_hat = code_embeddings(codes, codebooks.float()).sum(dim=1)
    return codes, z_hat.to(z.dtype)


def code_embeddings(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """``[B, L, d]`` with row ``[b, l] = codebooks[l, codes[b, l]]`` (differentiable gather)."""
    L, N, d = codebooks.shape
    # one index_select into the flattened codebooks: its backward is an index_add, about half the cost
    # of the sorting accumulate of advanced indexing's backward
    flat = (codes + torch.arange(L, device=codes.device) * N).reshape(-1)
    return codebooks.reshape(L * N, d).index_select(0, flat).view(*codes.shape, d)
