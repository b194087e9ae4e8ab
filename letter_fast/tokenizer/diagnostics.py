"""What a tokenization looks like: the measures of LETTER's analysis (Sec. 4.3-4.4).

* collision rate: share of items whose identifier another item also has; and the duplicate rate
  ``(V - distinct identifiers) / V``, the share of items that would need a new identifier (two items on one
  identifier: collision rate 2/V, duplicate rate 1/V);
* codes used and normalized entropy per level: how evenly each codebook is used;
* Gini coefficient of the first-level code load (0 = perfectly even; Fig. 6 of the paper);
* prefix-group sizes: for each prefix length k, the items per distinct k-code prefix (max and median over the
  prefixes in use): how many items a generative recommender's beam must tell apart below that prefix;
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


def duplicate_rate(codes: torch.Tensor) -> float:
    """``(V - distinct identifiers) / V``: the share of items beyond the first on each shared identifier."""
    if codes.shape[0] == 0:
        return 0.0
    return (codes.shape[0] - torch.unique(codes, dim=0).shape[0]) / codes.shape[0]


def prefix_groups(codes: torch.Tensor) -> list[dict]:
    """Per prefix length ``k = 1..L``: the number of distinct k-code prefixes and the items per prefix
    (max, median over the prefixes in use; ``k = L`` is the largest collision group)."""
    out = []
    for k in range(1, codes.shape[1] + 1):
        if codes.shape[0] == 0:
            out.append({"length": k, "groups": 0, "max": 0, "median": 0.0})
            continue
        counts = torch.unique(codes[:, :k], dim=0, return_counts=True)[1]
        out.append({"length": k, "groups": int(counts.numel()), "max": int(counts.max()),
                    "median": float(counts.double().quantile(0.5))})
    return out


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
        "codebook_size": int(codebook_size),
        "collision_rate": collision_rate(codes),
        "duplicate_rate": duplicate_rate(codes),
        "levels_usage": level_usage(codes, codebook_size),
        "entropy_bits": entropy_bits(codes, codebook_size),
        "first_level_gini": gini(first),
        "prefix_groups": prefix_groups(codes),
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


def plot_first_level_curves(codes: dict, path, title: str = "") -> Path:
    """One plot, one curve per tokenization (``{label: [V, L] codes}``): the share of items on each first-level
    code, codes sorted by load (rank 1 = the most loaded), log scale: the curves of LETTER's Fig. 6 side by side.
    Shares, not counts, so catalogs of different sizes compare."""
    from letter_fast._optional import require

    matplotlib = require("matplotlib", "plot_first_level_curves (the first-level code plot)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from letter_fast.io import atomic_path

    fig, ax = plt.subplots(figsize=(8, 4))
    for label, c in codes.items():
        counts = torch.bincount(c[:, 0])
        counts = torch.sort(counts[counts > 0], descending=True).values.double()
        share = (counts / counts.sum()).numpy()
        ax.plot(range(1, len(share) + 1), share, drawstyle="steps-mid", label=f"{label} ({len(share)} codes used)")
    ax.set_yscale("log")
    ax.set_xlabel("first-level code, sorted by load (rank)")
    ax.set_ylabel("share of items")
    ax.set_title(title or "first-level code distribution")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
