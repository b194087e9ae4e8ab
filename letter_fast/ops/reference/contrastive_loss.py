"""Reference softmax contrastive loss: the full [B, M] logit matrix and ``F.cross_entropy``."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64 (gradcheck); float32, float16 and bfloat16 accumulate in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def reduce_rows(rows: torch.Tensor, reduction: str) -> torch.Tensor:
    """``none``: the [B] rows; ``sum``; ``mean`` (0 for an empty batch, not NaN)."""
    if reduction == "none":
        return rows
    total = rows.sum()
    return total if reduction == "sum" else total / max(rows.shape[0], 1)


def contrastive_loss_reference(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    positives: torch.Tensor,
    exclude: Optional[torch.Tensor] = None,
    temperature: float = 1.0,
    normalize: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """``loss_i = -log softmax_{j != exclude_i}(<a_i, c_j> / tau)[positives_i]``, reduced.

    What a PyTorch user writes (LETTER's reference code does the same for L_CF and L_div): the
    [B, M] logits in the accumulation dtype, the excluded entry of each row set to -inf, then
    cross-entropy. Autograd gives both gradients. Memory O(B M).
    """
    acc = accumulation_dtype(anchors.dtype)
    a, c = anchors.to(acc), candidates.to(acc)
    if normalize:
        a, c = F.normalize(a, dim=1), F.normalize(c, dim=1)
    logits = (a @ c.T) / temperature
    if exclude is not None:
        logits = logits.scatter(1, exclude[:, None], float("-inf"))
    # cross_entropy rejects an empty batch; an empty row sum keeps the graph for B = 0.
    rows = F.cross_entropy(logits, positives, reduction="none") if a.shape[0] else logits.sum(1)
    return reduce_rows(rows, reduction)
