"""What a tokenization looks like: the measures of LETTER's analysis (Sec. 4.3-4.4).

* collision rate: share of items whose identifier another item also has;
* codes used and normalized entropy per level: how evenly each codebook is used;
* Gini coefficient of the first-level code load (0 = perfectly even; Fig. 6 of the paper);
* entropy per level in bits (the training curve, :mod:`letter_fast.tokenizer.curve`);
* code similarity of CF-nearest pairs (Table 4): for each item, its nearest neighbour by cosine
  similarity of CF embeddings, and the share of code positions the two identifiers agree on,
  averaged over items. Collaborative regularization should raise it (0.08 -> 0.28 on Instruments).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from letter_fast.tokenizer.collisions import collision_rate


def gini(counts: torch.Tensor) -> float:
    """Gini coefficient of non-negative loads (0: all equal; -> 1: all on one)."""
    x = torch.sort(counts.double().flatten()).values
    n = x.numel()
    if n == 0 or x.sum() == 0:
        return 0.0
    index = torch.arange(1, n + 1, dtype=torch.float64)
    return float((2 * (index * x).sum() / (n * x.sum())) - (n + 1) / n)


def level_usage(codes: torch.Tensor, codebook_size: int) -> list[dict]:
    """Per level: codes used, normalized entropy (1 = uniform over all N codes)."""
    out = []
    for level in range(codes.shape[1]):
        counts = torch.bincount(codes[:, level], minlength=codebook_size).double()
        p = counts[counts > 0] / counts.sum()
        entropy = float(-(p * p.log()).sum() / torch.log(torch.tensor(float(max(codebook_size, 2)))))
        out.append({"level": level + 1, "codes_used": int((counts > 0).sum()), "entropy": entropy})
    return out


def entropy_bits(codes: torch.Tensor, codebook_size: int) -> list[float]:
    """Per level, the entropy of the code load in bits (log2 N = uniform over all N codes; 0 = one code)."""
    out = []
    for level in range(codes.shape[1]):
        counts = torch.bincount(codes[:, level], minlength=codebook_size).double()
        p = counts[counts > 0] / counts.sum()
        out.append(float(-(p * p.log2()).sum()))
    return out


def cf_neighbours(cf: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Each item's nearest other item by cosine similarity of CF embeddings ``[V]`` (ties: the lower index)."""
    cf = torch.nn.functional.normalize(cf.float(), dim=1)
    neighbours = []
    for start in range(0, cf.shape[0], chunk):
        sim = cf[start:start + chunk] @ cf.T
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + start] = -float("inf")  # not itself
        neighbours.append(sim.argmax(1))
    return torch.cat(neighbours)


def neighbour_code_similarity(codes: torch.Tensor, neighbours: torch.Tensor) -> float:
    """Mean share of positions where an item's code equals its neighbour's (``neighbours`` from
    :func:`cf_neighbours`; computed once, it serves every evaluation of a training run)."""
    return float((codes == codes[neighbours]).float().mean())


def cf_neighbour_code_similarity(codes: torch.Tensor, cf: torch.Tensor, chunk: int = 4096) -> float:
    """Mean share of positions where an item's code equals its CF-nearest neighbour's code."""
    return neighbour_code_similarity(codes, cf_neighbours(cf, chunk))


def inspect_codes(codes: torch.Tensor, codebook_size: int, cf: Optional[torch.Tensor] = None,
                  codes_before: Optional[torch.Tensor] = None) -> dict:
    """All measures in one dict (``codes_before``: identifiers before collision re-assignment)."""
    first = torch.bincount(codes[:, 0], minlength=codebook_size)
    report = {
        "items": int(codes.shape[0]), "levels": int(codes.shape[1]),
        "collision_rate": collision_rate(codes),
        "levels_usage": level_usage(codes, codebook_size),
        "first_level_gini": gini(first),
    }
    if codes_before is not None:
        report["collision_rate_before_reassignment"] = collision_rate(codes_before)
    if cf is not None:
        report["cf_neighbour_code_similarity"] = cf_neighbour_code_similarity(codes[:, : codes.shape[1]], cf)
    return report


def plot_first_level(codes: torch.Tensor, codebook_size: int, path, title: str = "") -> Path:
    """Bar chart of items per first-level code, sorted by load (like LETTER's Fig. 6)."""
    from letter_fast._optional import require

    matplotlib = require("matplotlib", "plot_first_level (the first-level code plot)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from letter_fast.io import atomic_path

    counts = torch.sort(torch.bincount(codes[:, 0], minlength=codebook_size), descending=True).values
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(range(codebook_size), counts.numpy(), width=1.0)
    ax.set_xlabel("first-level code (sorted by load)")
    ax.set_ylabel("items")
    ax.set_title(title or f"first-level code load (Gini {gini(counts):.3f}, {int((counts > 0).sum())} codes used)")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
