"""Evaluating LC-Rec: Recall@K and NDCG@K over every test (or validation) user, full ranking, per prompt template.

Each user's prompt (the ``seqrec`` task: the history as code tokens, at most ``max_history`` items, framed by one
template) is decoded by :class:`~letter_fast.genrec.lcrec.decoder.LCRecDecoder`: beam search over the response's
``L`` code tokens constrained to real identifiers, so the ranking is over the whole catalog. The ranks go through
the same code as TIGER's (:func:`letter_fast.genrec.evaluate.topk_ranks`): identifier level (the papers' protocol)
and, when identifiers collide, item level (``item_`` prefix).

LC-Rec reports its numbers per prompt template; ``templates`` picks which of the ``seqrec`` templates are
evaluated. The result holds the metrics of each (``per_template``) and their mean over the templates
(``metrics``; with one template the two are the same).

Under torch.distributed (``dist`` given and enabled) every rank decodes every ``world``-th user and the ranks are
gathered back into user order, so every rank ends with the metrics of the whole set (the same numbers as one
process, up to the model's float rounding).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from letter_fast.metrics import topk_metrics

KS = (5, 10)


def parse_templates(value: Union[str, int, Sequence[int], None], count: int) -> list[int]:
    """``"all"`` / ``None`` -> every template; ``"0,2"`` / ``[0, 2]`` / ``1`` -> those (checked against ``count``)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("all", "")):
        return list(range(count))
    if isinstance(value, int):
        ids = [value]
    elif isinstance(value, str):
        try:
            ids = [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"templates must be 'all' or a comma list of template numbers, got {value!r}") from None
    else:
        ids = [int(v) for v in value]
    bad = [t for t in ids if not 0 <= t < count]
    if bad or not ids:
        raise ValueError(f"template numbers {bad or ids} out of range: the seqrec task has templates 0..{count - 1}")
    return sorted(dict.fromkeys(ids))


def prompt_token_ids(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Prompts -> token id lists as generation sees them (special tokens of the tokenizer, no trailing EOS)."""
    ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    eos = tokenizer.eos_token_id
    return [row[:-1] if eos is not None and row[-1:] == [eos] else row for row in ids]


def rank_users(model, index, code_token_ids, prompts: Sequence[Sequence[int]], targets: torch.Tensor, *,
               eos_token_id=None, pad_token_id=None, num_beams: int = 20, batch_size: int = 16,
               autocast_dtype=None, dist=None) -> dict[str, torch.Tensor]:
    """``{"identifier": ranks [U], "item": ranks [U]}`` of each user's target in its top-10 (see ``topk_ranks``)."""
    from letter_fast.genrec.evaluate import topk_ranks
    from letter_fast.genrec.lcrec.decoder import LCRecDecoder

    U = len(prompts)
    world, rank = (dist.world, dist.rank) if dist is not None and dist.enabled else (1, 0)
    mine = list(range(rank, U, world))
    decoder = LCRecDecoder(model, index, code_token_ids, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    device = decoder.device
    if mine:
        with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            _, _, identifiers = decoder.recommend([prompts[i] for i in mine], num_beams=num_beams,
                                                  num_return=max(KS), batch_size=batch_size, return_identifiers=True)
        ranks = topk_ranks(identifiers, targets[mine], decoder.index)
    else:
        ranks = {"identifier": torch.zeros(0, dtype=torch.long), "item": torch.zeros(0, dtype=torch.long)}
    if world == 1:
        return ranks
    import torch.distributed as tdist

    every = [None] * world
    tdist.all_gather_object(every, (mine, ranks["identifier"].tolist(), ranks["item"].tolist()))
    out = {"identifier": torch.zeros(U, dtype=torch.long), "item": torch.zeros(U, dtype=torch.long)}
    for rows, ident, item in every:
        out["identifier"][rows] = torch.tensor(ident, dtype=torch.long)
        out["item"][rows] = torch.tensor(item, dtype=torch.long)
    return out


def evaluate_lcrec(model, tokenizer, code_tokens, dataset, codes: Optional[torch.Tensor] = None, *,
                   split: str = "test", templates: Union[str, Sequence[int], None] = (0,), index=None,
                   num_beams: int = 20, batch_size: int = 16, max_history: int = 20, autocast_dtype=None,
                   users: Optional[torch.Tensor] = None, dist=None, log=None) -> dict:
    """Recall@5/10 and NDCG@5/10 of an LC-Rec model on ``split`` of ``dataset``, per prompt template and their mean.

    ``code_tokens``: the :class:`~letter_fast.genrec.lcrec.tokens.CodeTokens` of ``tokenizer``; ``codes [V, L]`` the
    item identifiers (default ``dataset.codes``), checked to fit the code tokens; ``users``: rows of the split to
    keep (a validation subset), default all.

    Returns ``{"metrics": mean over templates, "per_template": {"<t>": metrics}, "templates": [...], "users": U,
    "num_beams", "collisions": {...}}``; metrics hold the identifier-level values and, when identifiers collide, the
    ``item_``-prefixed item-level ones.
    """
    from letter_fast.genrec.evaluate import build_index
    from letter_fast.genrec.lcrec.examples import build_examples
    from letter_fast.genrec.lcrec.templates import load_templates

    if num_beams < max(KS):
        raise ValueError(f"num_beams must be >= {max(KS)} to rank the top {max(KS)}, got {num_beams}")
    if split not in ("test", "valid"):
        raise ValueError(f"split must be test or valid, got {split!r}")
    codes = dataset.codes if codes is None else codes
    if codes is None:
        raise ValueError(f"data set {dataset.name!r} has no item codes: pass the identifiers (--index)")
    code_tokens.check_codes(codes, "the identifiers")
    ids = parse_templates(templates, len(load_templates()["seqrec"]))
    device = next(model.parameters()).device
    index = index if index is not None else build_index(codes, max(code_tokens.num_codes), device=device)
    per_template, U = {}, 0
    for t in ids:
        examples = build_examples(dataset, codes, split, ("seqrec",), max_history=max_history, template_ids=t)
        if users is not None:
            examples = examples[users]
        U = len(examples)
        if U == 0:
            raise ValueError(f"no users to evaluate (the {split} split is empty)")
        ranks = rank_users(model, index, code_tokens.code_token_ids(), prompt_token_ids(tokenizer, examples.prompt),
                           examples.target, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id, num_beams=num_beams, batch_size=batch_size,
                           autocast_dtype=autocast_dtype, dist=dist)
        metrics = topk_metrics(ranks["identifier"], KS)
        if index.has_collisions:
            metrics.update({f"item_{k}": v for k, v in topk_metrics(ranks["item"], KS).items()})
        per_template[str(t)] = metrics
        if log is not None:
            log(f"template {t}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "@10" in k))
    names = list(next(iter(per_template.values())))
    mean = {k: sum(m[k] for m in per_template.values()) / len(per_template) for k in names}
    all_ids = torch.arange(index.num_identifiers, device=index.device)
    sizes = index.group_sizes(all_ids)
    return {"metrics": mean, "per_template": per_template, "templates": ids, "users": U, "num_beams": num_beams,
            "collisions": {"items": index.num_items, "identifiers": index.num_identifiers,
                           "items_sharing_an_identifier": int(sizes[sizes > 1].sum())}}


def write_lcrec_results(result: dict, json_path=None, table_path=None, name: str = "LC-Rec") -> str:
    """Write ``result`` as json and a markdown table: one row per template and the mean; return the table text."""
    import json
    from pathlib import Path

    from letter_fast.genrec.evaluate import metrics_table
    from letter_fast.io import atomic_write

    rows = {f"{name}, template {t}": m for t, m in result["per_template"].items()}
    if len(rows) > 1 or not rows:
        rows[f"{name}, mean of {len(result['per_template'])} templates"] = result["metrics"]
    table = metrics_table(rows)
    if json_path:
        atomic_write(Path(json_path), lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
    if table_path:
        atomic_write(Path(table_path), lambda tmp: tmp.write_text(table))
    return table


__all__ = ["evaluate_lcrec", "rank_users", "parse_templates", "prompt_token_ids", "write_lcrec_results", "KS"]
