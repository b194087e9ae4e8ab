"""Evaluating a generative recommender: Recall@K and NDCG@K over all test users, full ranking.

Each user's ranked list is the trie-constrained beam search's output (20 beams by default), so every entry is a real
identifier and the ranking is over the whole catalog (no sampled negatives). Metrics follow ``letter_fast.metrics``
(one target per user, 0-based rank r: hit = [r < K], NDCG = 1 / log2(r + 2)).

**Identifier collisions.** When several items share one identifier (the released Instruments index has 9,897
identifiers for 9,922 items) the model cannot tell them apart. Two views are reported:

* identifier level (the papers' protocol): the target counts as found at rank r when the identifier at rank r is
  the target's identifier;
* item level (``item_`` prefix): the ranked identifiers are expanded into items, each identifier covering its whole
  group of items (in item-id order) at consecutive ranks, so the target's rank is the number of items listed before
  its identifier plus its position inside the group. Without collisions the two are equal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from letter_fast.genrec.tiger import CodeVocabulary, TigerSequences, sequences_from_samples
from letter_fast.genrec.tiger_decoder import recommend
from letter_fast.io import atomic_write
from letter_fast.metrics import ranks_from_topk, topk_metrics

KS = (5, 10)


def build_index(codes: torch.Tensor, num_codes: Optional[int] = None, device=None):
    """The trie over ``codes [V, L]`` used for decoding (identifier collisions allowed and grouped)."""
    from letter_fast.genrec import ItemIndex

    n = int(num_codes) if num_codes is not None else int(codes.max()) + 1
    index = ItemIndex.from_codes(codes, num_codes=n, allow_collisions=True)
    return index.to(device) if device is not None and hasattr(index, "to") else index


class IdentifierGroups:
    """Items grouped by identical identifier: ``group[v]``, group sizes, and each item's position in its group."""

    def __init__(self, codes: torch.Tensor):
        _, self.group = torch.unique(codes.cpu(), dim=0, return_inverse=True)                # [V]
        self.num_groups = int(self.group.max()) + 1 if self.group.numel() else 0
        self.size = torch.bincount(self.group, minlength=self.num_groups)
        order = torch.argsort(self.group, stable=True)               # items of each group, in item-id order
        start = torch.cumsum(self.size, 0) - self.size
        self.position = torch.empty_like(self.group)
        self.position[order] = torch.arange(self.group.numel()) - start[self.group[order]]

    @property
    def has_collisions(self) -> bool:
        return self.num_groups < self.group.numel()


def topk_ranks(topk_items: torch.Tensor, targets: torch.Tensor, groups: IdentifierGroups) -> dict[str, torch.Tensor]:
    """0-based ranks of each target in the ranked lists ``topk_items [U, K]`` (-1 = empty slot).

    Returns ``{"identifier": ranks, "item": ranks}``; a target absent from the list gets rank ``K`` (identifier) or
    a rank past every cut-off (item).
    """
    valid = topk_items >= 0
    g = torch.where(valid, groups.group[topk_items.clamp(min=0)], torch.full_like(topk_items, -1))
    tg = groups.group[targets]
    ident = ranks_from_topk(g, tg)
    K = topk_items.shape[1]
    sizes = torch.where(valid, groups.size[g.clamp(min=0)], torch.zeros_like(g))
    before = torch.cumsum(sizes, 1) - sizes                                  # items listed before each slot
    hit = ident < K
    item = torch.full_like(ident, K * int(groups.size.max()) + 1)
    rows = hit.nonzero().squeeze(1)
    item[rows] = before[rows, ident[rows]] + groups.position[targets[rows]]
    return {"identifier": ident, "item": item}


def ranking_metrics(model, vocab: CodeVocabulary, index, sequences: TigerSequences, codes: torch.Tensor, *,
                    num_beams: int = 20, batch_size: int = 256, device=None, autocast_dtype=None,
                    sums: bool = False, progress: bool = False):
    """Identifier-level metrics of ``model`` on ``sequences`` -> ``(metrics, users)``; sums instead of means if ``sums``."""
    n = len(sequences)
    if n == 0:
        return ({f"{m}@{k}": 0.0 if sums else float("nan") for k in KS for m in ("recall", "ndcg")}, 0)
    items, _ = recommend(model, vocab, index, sequences, num_beams=num_beams, num_return=max(KS),
                         batch_size=batch_size, device=device, autocast_dtype=autocast_dtype, progress=progress)
    ranks = topk_ranks(items, sequences.targets.cpu(), IdentifierGroups(codes))["identifier"]
    metrics = topk_metrics(ranks, KS)
    if sums:
        metrics = {k: v * n for k, v in metrics.items()}
    return metrics, n


def evaluate_tiger(model, vocab: CodeVocabulary, samples, codes: torch.Tensor, *, index=None, num_beams: int = 20,
                   batch_size: int = 256, device=None, autocast_dtype=None, max_history: int = 20,
                   progress: bool = True) -> dict:
    """Recall@5/10 and NDCG@5/10 of a trained TIGER on ``samples`` (e.g. ``split.test``), full ranking.

    Returns ``{"metrics": {...}, "users": U, "collisions": {...}, "num_beams": ..}``; ``metrics`` holds the
    identifier-level values and, when identifiers collide, the ``item_``-prefixed item-level ones.
    """
    if num_beams < max(KS):
        raise ValueError(f"num_beams must be >= {max(KS)} to rank the top {max(KS)}, got {num_beams}")
    sequences = samples if isinstance(samples, TigerSequences) else sequences_from_samples(codes, samples, vocab,
                                                                                          max_history)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    index = index if index is not None else build_index(codes, vocab.num_codes, device=device)
    groups = IdentifierGroups(codes)
    if len(sequences) == 0:
        raise ValueError("no users to evaluate (the split has no test samples)")
    items, _ = recommend(model, vocab, index, sequences, num_beams=num_beams, num_return=max(KS),
                         batch_size=batch_size, device=device, autocast_dtype=autocast_dtype, progress=progress)
    ranks = topk_ranks(items, sequences.targets.cpu(), groups)
    metrics = topk_metrics(ranks["identifier"], KS)
    if groups.has_collisions:
        metrics.update({f"item_{k}": v for k, v in topk_metrics(ranks["item"], KS).items()})
    return {"metrics": metrics, "users": len(sequences), "num_beams": num_beams,
            "collisions": {"items": int(groups.group.numel()), "identifiers": groups.num_groups,
                           "items_sharing_an_identifier": int((groups.size[groups.group] > 1).sum())}}


def metrics_table(rows: dict[str, dict]) -> str:
    """Markdown table: one row per named result, columns R@5 N@5 R@10 N@10 (+ item-level when present)."""
    cols = [f"{m}@{k}" for k in KS for m in ("recall", "ndcg")]
    has_item = any(f"item_{cols[0]}" in r for r in rows.values())
    if has_item:
        cols += [f"item_{c}" for c in cols]
    head = "| model | " + " | ".join(cols) + " |"
    lines = [head, "|---|" + "---:|" * len(cols)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.4f}" if c in r else "—" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_results(result: dict, json_path=None, table_path=None, name: str = "TIGER") -> str:
    """Write the evaluation as json and as a markdown table (both atomically); return the table text."""
    table = metrics_table({name: result["metrics"]})
    if json_path:
        atomic_write(Path(json_path), lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
    if table_path:
        atomic_write(Path(table_path), lambda tmp: tmp.write_text(table))
    return table
