"""Top-K metrics of the papers' protocol: leave-one-out, one target per user, full ranking over all items.

Everything works from the 0-based **rank** of each user's target (0 = ranked first):

* Recall@K = mean over users of [rank < K]  (one relevant item, so hit rate = recall)
* NDCG@K   = mean over users of [rank < K] / log2(rank + 2)  (ideal DCG is 1 for a single target)

``ranks_from_scores`` turns full score matrices into ranks (ties counted against the target, so a model
that scores everything equally gets no credit); ``ranks_from_topk`` turns a ranked list of K
recommendations (e.g. a generative recommender's beams) into ranks, K meaning "not in the list".
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch

from letter_fast.ops import checks


def _check_ranks(ranks: torch.Tensor) -> torch.Tensor:
    if not isinstance(ranks, torch.Tensor) or ranks.dim() != 1:
        raise ValueError(f"ranks must be a 1-D tensor (one rank per user), got {getattr(ranks, 'shape', ranks)}")
    if ranks.numel() and int(ranks.min()) < 0:
        raise ValueError("ranks are 0-based and must be non-negative")
    return ranks


def _check_k(k: int) -> None:
    if int(k) < 1:
        raise ValueError(f"K must be >= 1, got {k}")


def recall_at_k(ranks: torch.Tensor, k: int) -> float:
    """Share of users whose target is in the top ``k`` (ranks are 0-based)."""
    _check_k(k)
    ranks = _check_ranks(ranks)
    if ranks.numel() == 0:
        return float("nan")
    return float((ranks < k).double().mean())


def ndcg_at_k(ranks: torch.Tensor, k: int) -> float:
    """Mean of ``1 / log2(rank + 2)`` over users whose target is in the top ``k``, 0 otherwise."""
    _check_k(k)
    ranks = _check_ranks(ranks)
    if ranks.numel() == 0:
        return float("nan")
    gain = 1.0 / torch.log2(ranks.double() + 2.0)
    return float(torch.where(ranks < k, gain, torch.zeros_like(gain)).mean())


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of ``targets[b]`` in row ``scores[b]`` (``[B, V]``): items scoring higher, plus ties.

    Ties count against the target (pessimistic), so constant or NaN-free degenerate scores cannot look good.
    NaN scores are rejected.
    """
    if scores.dim() != 2 or targets.dim() != 1 or targets.shape[0] != scores.shape[0]:
        raise ValueError(f"scores must be [B, V] and targets [B], got {tuple(scores.shape)} and {tuple(targets.shape)}")
    if not checks.index_range(targets, scores.shape[1]):
        raise ValueError(f"targets must lie in 0..{scores.shape[1] - 1}")
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN; the model diverged or its inputs hold NaN")
    target_score = scores.gather(1, targets[:, None].long())
    return (scores >= target_score).sum(1) - 1


def ranks_from_topk(topk: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rank of each target in a ranked recommendation list ``topk [B, K]`` (first hit); ``K`` when absent.

    Use with K >= the largest metric cut-off: a target outside the list counts as a miss at every cut-off.
    """
    if topk.dim() != 2 or targets.dim() != 1 or targets.shape[0] != topk.shape[0]:
        raise ValueError(f"topk must be [B, K] and targets [B], got {tuple(topk.shape)} and {tuple(targets.shape)}")
    k = topk.shape[1]
    hit = topk == targets[:, None]
    position = torch.where(hit, torch.arange(k, device=topk.device)[None, :], torch.full_like(topk, k))
    return position.min(1).values if k else torch.zeros_like(targets)


def topk_metrics(ranks: torch.Tensor, ks: Iterable[int] = (5, 10)) -> dict[str, float]:
    """``{"recall@5": .., "ndcg@5": .., "recall@10": .., "ndcg@10": ..}`` from 0-based ranks."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ranks, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
    return out


def format_metrics(metrics: Mapping[str, float]) -> str:
    return "  ".join(f"{name} {value:.4f}" if not math.isnan(value) else f"{name} nan"
                     for name, value in metrics.items())


__all__ = ["recall_at_k", "ndcg_at_k", "ranks_from_scores", "ranks_from_topk", "topk_metrics", "format_metrics"]
