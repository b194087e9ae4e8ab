"""LC-Rec instruction examples (prompt text, response text) from a data set and its item codes.

Sequence tasks follow the leave-one-out protocol of :mod:`letter_fast.data.splits`: training on every prefix of
``items[:-2]``, validation on ``items[-2]``, test on ``items[-1]``, the history cut to its most recent
``max_history`` (20) items, oldest first, joined by ", ". Item tasks (``item2index``, ``index2item``) give one
training example per item. See :mod:`letter_fast.genrec.lcrec.templates` for the tasks.

Templates: in training a random template per example, drawn with a seeded ``torch.Generator`` (same seed, same
examples); in evaluation a fixed template id, or a list of ids (every sample once per template, so results can
be reported per prompt; ``template`` records which).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from letter_fast.data.splits import split_dataset
from letter_fast.genrec.lcrec.templates import TEXT_TASKS, expand_tasks, frame, load_templates
from letter_fast.genrec.lcrec.tokens import item_strings

SPLITS = ("train", "valid", "test")
ITEM_TASKS = ("item2index", "index2item")


@dataclass
class LCRecExamples:
    """``S`` examples: ``task``, ``prompt`` (framed, ends with ``### Response:``) and ``response`` strings, and
    ``user [S]`` (-1 for item tasks), ``target [S]`` (the item the response is about), ``template [S]`` (the
    template's index within its task)."""

    task: list
    prompt: list
    response: list
    user: torch.Tensor
    target: torch.Tensor
    template: torch.Tensor

    def __len__(self) -> int:
        return len(self.prompt)

    def __getitem__(self, index) -> LCRecExamples:
        """Rows selected by an index tensor, int list, slice or int."""
        if isinstance(index, int):
            index = [index]
        if isinstance(index, slice):
            rows = range(len(self))[index]
        else:
            rows = torch.as_tensor(index).long().flatten().tolist()
        rows = list(rows)
        pick = torch.tensor(rows, dtype=torch.long)
        return LCRecExamples([self.task[i] for i in rows], [self.prompt[i] for i in rows],
                             [self.response[i] for i in rows], self.user[pick], self.target[pick], self.template[pick])

    @classmethod
    def concat(cls, parts: Sequence[LCRecExamples]) -> LCRecExamples:
        parts = list(parts)
        return cls([t for p in parts for t in p.task], [t for p in parts for t in p.prompt],
                   [t for p in parts for t in p.response],
                   torch.cat([p.user for p in parts]) if parts else torch.zeros(0, dtype=torch.long),
                   torch.cat([p.target for p in parts]) if parts else torch.zeros(0, dtype=torch.long),
                   torch.cat([p.template for p in parts]) if parts else torch.zeros(0, dtype=torch.long))

    def counts(self) -> dict:
        """Examples per task."""
        out: dict = {}
        for t in self.task:
            out[t] = out.get(t, 0) + 1
        return out


def _clean(text) -> str:
    return " ".join(str(text or "").split())


def _choose_templates(n: int, count: int, split: str, template_ids, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(row of each example into the samples, template of each example)."""
    if split == "train" and template_ids is None:
        return torch.arange(n), torch.randint(count, (n,), generator=generator)
    ids = [0] if template_ids is None else ([template_ids] if isinstance(template_ids, int) else list(template_ids))
    for t in ids:
        if not 0 <= int(t) < count:
            raise ValueError(f"template id {t} out of range: this task has templates 0..{count - 1}")
    ids_t = torch.tensor(ids, dtype=torch.long)
    return torch.arange(n).repeat_interleave(len(ids)), ids_t.repeat(n)


def build_examples(dataset, codes: Optional[torch.Tensor] = None, split: str = "train",
                   tasks: Union[str, Sequence[str]] = ("seqrec",), *, max_history: int = 20,
                   template_ids: Union[int, Sequence[int], None] = None, templates: Optional[dict] = None,
                   generator: Optional[torch.Generator] = None, seed: Optional[int] = None) -> LCRecExamples:
    """Instruction examples of ``tasks`` for ``split`` of ``dataset`` (a ``letter_fast.data.Dataset``).

    Args:
        codes: ``[V, L]`` item codes (default ``dataset.codes``).
        split: ``train`` (every prefix of ``items[:-2]``; item tasks: every item), ``valid`` or ``test``
            (sequence tasks only).
        tasks: names from :data:`~letter_fast.genrec.lcrec.templates.TASKS` or the group ``fusionseqrec``.
        template_ids: None: random per example in training, template 0 in evaluation; an int or a list fixes them
            (a list repeats every sample once per template).
        templates: ``{task: [{"instruction", "response"}, ...]}`` (default: the shipped ``templates.json``).
        generator / seed: the draw of training templates (default: a generator seeded with ``seed`` or 0).

    Examples are ordered by task, then user (or item), then time, then template.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    tasks = expand_tasks(tasks)
    codes = dataset.codes if codes is None else codes
    if codes is None:
        raise ValueError(f"data set {dataset.name!r} has no item codes: pass codes [V, L] (e.g. from a LETTER index)")
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or codes.shape[0] != dataset.num_items:
        raise ValueError(f"codes must be [{dataset.num_items}, L] item codes, got "
                         f"{getattr(codes, 'shape', type(codes).__name__)}")
    needs_text = [t for t in tasks if t in TEXT_TASKS]
    if needs_text and dataset.items is None:
        raise ValueError(f"tasks {', '.join(needs_text)} need item text, but data set {dataset.name!r} has none "
                         f"(no {dataset.name}.item.json); use tasks=('seqrec',)")
    if split != "train" and any(t in ITEM_TASKS for t in tasks):
        raise ValueError(f"{', '.join(t for t in tasks if t in ITEM_TASKS)} are training tasks (one example per "
                         f"item); evaluate with seqrec / fusion_title / fusion_index")
    templates = templates if templates is not None else load_templates()
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
    code_str = item_strings(codes)
    titles = descriptions = None
    if dataset.items is not None:
        titles = [_clean(it.get("title")) for it in dataset.items]
        descriptions = [_clean(it.get("description")) for it in dataset.items]

    sequence = None
    if any(t not in ITEM_TASKS for t in tasks):
        sequence = getattr(split_dataset(dataset, max_history=max_history), split)
    parts = []
    for task in tasks:
        rows = templates.get(task)
        if not rows:
            raise ValueError(f"no templates for task {task!r}")
        if task in ITEM_TASKS:
            n = dataset.num_items
            history_text = None
            target = torch.arange(n)
            user = torch.full((n,), -1, dtype=torch.long)
        else:
            n = len(sequence)
            target, user = sequence.target, sequence.user
            # fusion_index writes the history as quoted titles, the others as code tokens
            names = [f'"{t}"' for t in titles] if task == "fusion_index" else code_str
            hist, lens = sequence.history.tolist(), sequence.lengths.tolist()
            width = sequence.history.shape[1]
            history_text = [", ".join(names[i] for i in row[width - k:]) for row, k in zip(hist, lens)]
        pick, template = _choose_templates(n, len(rows), split, template_ids, generator)
        targets = target.tolist()
        prompts, responses = [], []
        for r, t in zip(pick.tolist(), template.tolist()):
            item = targets[r]
            values = {"item": code_str[item], "history": history_text[r] if history_text is not None else ""}
            if titles is not None:
                values["title"], values["description"] = titles[item], descriptions[item]
            row = rows[t]
            prompts.append(frame(row["instruction"].format(**values)))
            responses.append(row["response"].format(**values))
        parts.append(LCRecExamples([task] * len(prompts), prompts, responses, user[pick], target[pick], template))
    return LCRecExamples.concat(parts)


__all__ = ["LCRecExamples", "build_examples", "SPLITS", "ITEM_TASKS"]
