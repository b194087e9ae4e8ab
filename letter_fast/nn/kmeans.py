"""k-means for codebook initialization: k-means++ seeding and Lloyd iterations, vectorized over points.

RQ-VAE codebooks start from k-means on the first batch's latents (Lee et al., CVPR 2022; Zeghidour et
al., SoundStream 2021), level by level on the residuals the previous level leaves. The model packages
(the LETTER tokenizer's size-constrained code clusters too) import it from here, so :mod:`letter_fast.nn`
depends on no model package.
"""

from __future__ import annotations

import torch


def squared_distances(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """``[n, k]`` squared Euclidean distances ``||x_i||^2 - 2 x_i.c_j + ||c_j||^2``, clamped at 0 against rounding."""
    return ((x * x).sum(1, keepdim=True) - 2 * x @ centers.T + (centers * centers).sum(1)).clamp_min_(0)


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each new center drawn with probability ~ D(x)^2.

    ``D(x)`` is a point's distance to its closest center so far; ``generator`` is a CPU generator
    (the draws are the same on every device).
    """
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=generator, device="cpu").item()
    centers = [x[first]]
    closest = squared_distances(x, x[first:first + 1]).squeeze(1)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than centers: repeat one
            idx = torch.randint(n, (1,), generator=generator).item()
        else:
            idx = torch.multinomial((closest / total).cpu(), 1, generator=generator).item()
        centers.append(x[idx])
        closest = torch.minimum(closest, squared_distances(x, x[idx:idx + 1]).squeeze(1))
    return torch.stack(centers)


def kmeans(x: torch.Tensor, k: int, iters: int = 25, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding. Returns ``(centers [k, d], labels [n])`` in float32.

    Each iteration assigns every point to its nearest center, ``labels_i = argmin_j ||x_i - c_j||^2``, and
    moves every center to the mean of its points; ``labels`` are the assignment of the last iteration.
    With fewer points than ``k`` the spare centers are copies of data points (every center is still a
    valid code); an empty cluster is re-seeded at the point farthest from its center. Deterministic for
    a given ``seed``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] == 0:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"kmeans: x must be a tensor of shape [n, d] with n >= 1 points, got {got}")
    if k < 1 or iters < 0:
        raise ValueError(f"kmeans: need k >= 1 and iters >= 0, got k={k}, iters={iters}")
    x = x.detach().float()
    g = torch.Generator().manual_seed(seed)
    centers = kmeans_plus_plus(x, k, g)
    labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for _ in range(iters):
        dist = squared_distances(x, centers)
        labels = dist.argmin(1)
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        empty = counts == 0
        centers = torch.where(empty[:, None], centers, sums / counts.clamp_min(1)[:, None])
        if empty.any() and x.shape[0] >= k:
            far = dist.gather(1, labels[:, None]).squeeze(1).topk(int(empty.sum())).indices
            centers[empty] = x[far]
    return centers, labels
