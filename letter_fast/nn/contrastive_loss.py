"""Modules over the fused contrastive losses: LETTER's collaborative and diversity regularizers.

LETTER (Wang et al., "Learnable Item Tokenization for Generative Recommendation", CIKM 2024, Sec. 3.2)
adds two softmax contrastive (InfoNCE) terms to the RQ-VAE loss; both run on
:func:`letter_fast.ops.contrastive_loss`'s kernels, which never form the ``[B, M]`` logits:

* :class:`InBatchContrastiveLoss`, the collaborative alignment
  ``L_CF = -(1/B) sum_i log( exp(<z_hat_i, h_i>/tau) / sum_j exp(<z_hat_i, h_j>/tau) )`` of each item's
  quantized embedding ``z_hat_i`` with its own CF embedding ``h_i`` against the batch's other items;
* :class:`CodebookDiversityLoss`, the code-assignment diversity term of every level ``l``,
  ``L_div,l = -(1/B) sum_i log( exp(<e_{c_i}, e_{p_i}>/tau) / sum_{j != c_i} exp(<e_{c_i}, e_j>/tau) )``,
  which pulls an item's code ``e_{c_i}`` towards another code ``p_i`` of its cluster and away from the
  rest of the codebook (its own code left out), so items spread over the codes.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from letter_fast import ops


class InBatchContrastiveLoss(nn.Module):
    """``L_CF`` of quantized embeddings ``z_hat [B, d]`` against CF embeddings ``cf_emb [B, d]`` (row i of each
    is item i; the other rows are its negatives).

    Args: ``temperature`` ``tau > 0``; ``normalize`` L2-normalizes the rows first (cosine logits);
    ``reduction`` ``"mean"``, ``"sum"`` or ``"none"`` (``[B]``); ``backend`` of the op. LETTER's setting:
    ``tau = 1``, no normalization, mean.
    """

    def __init__(self, temperature: float = 1.0, normalize: bool = False, reduction: str = "mean",
                 backend: Optional[str] = None):
        super().__init__()
        self.temperature, self.normalize, self.reduction, self.backend = temperature, normalize, reduction, backend

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, normalize={self.normalize}, reduction={self.reduction!r}"

    def forward(self, z_hat: torch.Tensor, cf_emb: torch.Tensor,
                positives: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``positives [B]``: the row of ``cf_emb [M, d]`` that is item i's own (default: row i, with ``M == B``);
        with more candidates than anchors (a rank's slice of a distributed global batch) the others are
        negatives."""
        if positives is not None:
            return ops.contrastive_loss(z_hat, cf_emb, positives, temperature=self.temperature,
                                        normalize=self.normalize, reduction=self.reduction, backend=self.backend)
        return ops.in_batch_contrastive_loss(z_hat, cf_emb, temperature=self.temperature, normalize=self.normalize,
                                             reduction=self.reduction, backend=self.backend)


class CodebookDiversityLoss(nn.Module):
    """``mean_l L_div,l`` over the levels of ``codebooks [L, N, d]`` for items' ``codes [B, L]`` and
    same-cluster ``positives [B, L]`` (an item's positive at level l is another code of its code's cluster).

    The anchor of item b at level l is a codebook row, ``e_{l,c_b} = C_l[c_b]``, so its logits against the
    codebook are row ``c_b`` of the Gram matrix ``G_l = C_l C_l^T / tau`` and its log-normalizer
    ``lse_l[c] = log sum_{j != c} exp(G_l[c, j])`` depends on the code only:

        L_div,l = (1/B) [ sum_c n_l[c] lse_l[c] - sum_b G_l[c_b, p_b] ],   n_l[c] = #{b : c_b = c}

    With ``N <= B`` (and no normalization) that is ``L N^2 d`` multiply-adds in one batched matmul instead of
    ``L B N d`` and one call instead of L; larger codebooks take the fused per-item kernel
    (:func:`letter_fast.ops.codebook_diversity_loss`), which never forms G. Both give the same loss and
    gradients (up to rounding); gradients reach the codebooks through anchors and candidates.
    A single codebook ``[N, d]`` with ``codes [B]`` and ``positives [B]`` is one level.
    """

    def __init__(self, temperature: float = 1.0, normalize: bool = False, backend: Optional[str] = None):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"CodebookDiversityLoss: temperature must be > 0, got {temperature}")
        self.temperature, self.normalize, self.backend = temperature, normalize, backend

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, normalize={self.normalize}"

    def forward(self, codebooks: torch.Tensor, codes: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        if isinstance(codebooks, torch.Tensor) and codebooks.dim() == 2:
            if not (isinstance(codes, torch.Tensor) and codes.dim() == 1
                    and isinstance(positives, torch.Tensor) and positives.dim() == 1):
                raise ValueError("CodebookDiversityLoss: a single codebook [N, d] takes codes [B] and positives [B]")
            return self(codebooks[None], codes[:, None], positives[:, None])
        if not isinstance(codebooks, torch.Tensor) or codebooks.dim() != 3:
            got = tuple(codebooks.shape) if isinstance(codebooks, torch.Tensor) else type(codebooks).__name__
            raise ValueError(f"CodebookDiversityLoss: codebooks must have shape [L, N, d] or [N, d], got {got}")
        L, N, _ = codebooks.shape
        for name, t in (("codes", codes), ("positives", positives)):
            if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[1] != L:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"CodebookDiversityLoss: {name} must have shape [B, L={L}], got {got}")
        if codes.shape != positives.shape:
            raise ValueError(f"CodebookDiversityLoss: codes {tuple(codes.shape)} and positives "
                             f"{tuple(positives.shape)} must have the same shape")
        B = codes.shape[0]
        if N > B or self.normalize or B == 0:
            # the per-item kernel validates codes and positives (dtype, range, positive != own code)
            e = ops.residual_code_embeddings(codes, codebooks)
            return torch.stack([
                ops.codebook_diversity_loss(e[:, level], codebooks[level], codes[:, level], positives[:, level],
                                            temperature=self.temperature, normalize=self.normalize,
                                            backend=self.backend)
                for level in range(L)
            ]).mean()
        _check_indices(codes, positives, N)
        gram = torch.bmm(codebooks, codebooks.transpose(1, 2))                       # [L, N, N]
        if self.temperature != 1.0:
            gram = gram / self.temperature
        own = torch.eye(N, dtype=torch.bool, device=gram.device)
        lse = torch.logsumexp(gram.masked_fill(own, float("-inf")), dim=2)         # [L, N]
        counts = torch.zeros(L, N, device=gram.device, dtype=gram.dtype)
        counts.scatter_add_(1, codes.T, torch.ones_like(codes.T, dtype=gram.dtype))
        levels = torch.arange(L, device=gram.device)[:, None]
        positive_logits = gram[levels, codes.T, positives.T]                          # [L, B]
        return ((counts * lse).sum() - positive_logits.sum()) / (B * L)


def _check_indices(codes: torch.Tensor, positives: torch.Tensor, N: int) -> None:
    """Index checks for the Gram path: int64, in range. (A positive equal to its own code, as a singleton
    cluster gives, is allowed here: its logit is ``G[c, c]`` over the normalizer without ``c``.)"""
    for name, t in (("codes", codes), ("positives", positives)):
        if t.dtype != torch.int64:
            raise TypeError(f"CodebookDiversityLoss: {name} must be int64, got {t.dtype}; cast it with .long()")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= N):
            raise ValueError(f"CodebookDiversityLoss: {name} must lie in [0, {N}), got values in "
                             f"[{int(t.min())}, {int(t.max())}]")
