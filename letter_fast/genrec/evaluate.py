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


def topk_ranks(identifiers: torch.Tensor, targets: torch.Tensor, index) -> dict[str, torch.Tensor]:
    """0-based ranks of each target in ranked identifier lists ``identifiers [U, K]`` (ids of ``index``, -1 = empty).

    Returns ``{"identifier": ranks, "item": ranks}``. Identifier level: the first slot holding the target's
    identifier, ``K`` if none. Item level: the slots expanded into their groups of items (``index`` order), so the
    rank is the number of items of the earlier slots plus the target's position in its own group; a miss gets a
    rank past every cut-off.
    """
    identifiers, targets = identifiers.to(index.device).long(), targets.to(index.device).long()
    U, K = identifiers.shape
    target_id = index.identifier_of_items(targets)
    ident = ranks_from_topk(identifiers, target_id)
    sizes = index.group_sizes(identifiers.reshape(-1)).reshape(U, K)                   # 0 for empty slots
    before = torch.cumsum(sizes, 1) - sizes                                           # items listed before a slot
    # the target's position inside its identifier's group
    members, offsets = index.items_of_identifier(target_id)
    owner = torch.repeat_interleave(torch.arange(U, device=index.device), offsets[1:] - offsets[:-1])
    slot = torch.arange(members.numel(), device=index.device) - offsets[owner]
    position = torch.zeros(U, dtype=torch.long, device=index.device)
    match = members == targets[owner]
    position[owner[match]] = slot[match]
    hit = ident < K
    miss_rank = 2 ** 31          # past every cut-off, whatever the list length
    item = torch.where(hit, before.gather(1, ident.clamp(max=K - 1)[:, None])[:, 0] + position,
                       torch.full_like(ident, miss_rank))
    return {"identifier": ident.cpu(), "item": item.cpu()}


def ranking_metrics(model, vocab: CodeVocabulary, index, sequences: TigerSequences, *,
                    num_beams: int = 20, batch_size: int = 256, device=None, autocast_dtype=None,
                    sums: bool = False, progress: bool = False):
    """Identifier-level metrics of ``model`` on ``sequences`` -> ``(metrics, users)``; sums instead of means if
    ``sums``."""
    n = len(sequences)
    if n == 0:
        return ({f"{m}@{k}": 0.0 if sums else float("nan") for k in KS for m in ("recall", "ndcg")}, 0)
    _, _, identifiers = recommend(model, vocab, index, sequences, num_beams=num_beams, num_return=max(KS),
                                  batch_size=batch_size, device=device, autocast_dtype=autocast_dtype,
                                  progress=progress, return_identifiers=True)
    ranks = topk_ranks(identifiers, sequences.targets, index)["identifier"]
    metrics = topk_metrics(ranks, KS)
    if sums:
        metrics = {k: v * n for k, v in metrics.items()}
    return metrics, n


def evaluate_tiger(model, vocab: CodeVocabulary, samples, codes: torch.Tensor, *, index=None, num_beams: int = 20,
                   batch_size: int = 256, device=None, autocast_dtype=None, max_history: int = 20,
                   progress: bool = True, return_ranked: bool = False) -> dict:
    """Recall@5/10 and NDCG@5/10 of a trained TIGER on ``samples`` (e.g. ``split.test``), full ranking.

    Returns ``{"metrics": {...}, "users": U, "collisions": {...}, "num_beams": ..}``; ``metrics`` holds the
    identifier-level values and, when identifiers collide, the ``item_``-prefixed item-level ones. To score a subset
    of users (e.g. those whose target is a new item), pass only their samples. ``return_ranked`` adds
    ``"ranked_identifiers"``: the ``[U, 10]`` top-10 identifier ids of ``index`` per user (-1 = empty slot), e.g. to
    see which items the model recommends.
    """
    if num_beams < max(KS):
        raise ValueError(f"num_beams must be >= {max(KS)} to rank the top {max(KS)}, got {num_beams}")
    sequences = samples if isinstance(samples, TigerSequences) else sequences_from_samples(codes, samples, vocab,
                                                                                          max_history)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    index = index if index is not None else build_index(codes, vocab.num_codes, device=device)
    if len(sequences) == 0:
        raise ValueError("no users to evaluate (the split has no test samples)")
    _, _, identifiers = recommend(model, vocab, index, sequences, num_beams=num_beams, num_return=max(KS),
                                  batch_size=batch_size, device=device, autocast_dtype=autocast_dtype,
                                  progress=progress, return_identifiers=True)
    ranks = topk_ranks(identifiers, sequences.targets, index)
    metrics = topk_metrics(ranks["identifier"], KS)
    if index.has_collisions:
        metrics.update({f"item_{k}": v for k, v in topk_metrics(ranks["item"], KS).items()})
    all_ids = torch.arange(index.num_identifiers, device=index.device)
    shared = int(index.group_sizes(all_ids)[index.group_sizes(all_ids) > 1].sum())
    result = {"metrics": metrics, "users": len(sequences), "num_beams": num_beams,
              "collisions": {"items": index.num_items, "identifiers": index.num_identifiers,
                             "items_sharing_an_identifier": shared}}
    if return_ranked:
        result["ranked_identifiers"] = identifiers.cpu()
    return result


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
