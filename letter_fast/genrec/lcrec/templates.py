"""LC-Rec prompt templates: data in ``templates.json`` (package data), the Alpaca frame around them.

A prompt is ``PROMPT_FRAME.format(instruction=...)``, which ends with ``### Response:``; the response text follows
right after it (no space), then EOS. Tasks (:data:`TASKS`):

* ``seqrec``        history as code tokens -> the next item's code tokens
* ``item2index``    an item's title / description -> its code tokens
* ``index2item``    code tokens -> the item's title / description
* ``fusion_title``  history as code tokens -> the next item's title   (LC-Rec's "fusionseqrec", one direction)
* ``fusion_index``  history as titles -> the next item's code tokens  (the other direction)

Training draws a template per example; evaluation fixes one (or a list, results per template).
"""

from __future__ import annotations

import json
import string
from functools import lru_cache
from pathlib import Path
from typing import Optional

from letter_fast.io import PathLike

PROMPT_FRAME = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
                "request.\n\n### Instruction:\n{instruction}\n\n### Response:")
TASKS = ("seqrec", "item2index", "index2item", "fusion_title", "fusion_index")
TEXT_TASKS = ("item2index", "index2item", "fusion_title", "fusion_index")  # need item text
TASK_GROUPS = {"fusionseqrec": ("fusion_title", "fusion_index")}
FIELDS = {"history", "item", "title", "description"}
TEMPLATES_FILE = Path(__file__).with_name("templates.json")


def _fields(text: str) -> set:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def expand_tasks(tasks) -> tuple:
    """Task names with groups (``fusionseqrec``) expanded, checked, de-duplicated in order."""
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t.strip()]
    out = []
    for task in tasks:
        task = task.strip()
        for t in TASK_GROUPS.get(task, (task,)):
            if t not in TASKS:
                raise ValueError(f"unknown LC-Rec task {t!r}; tasks: {', '.join(TASKS + tuple(TASK_GROUPS))}")
            if t not in out:
                out.append(t)
    if not out:
        raise ValueError("no LC-Rec task given")
    return tuple(out)


def load_templates(path: Optional[PathLike] = None) -> dict:
    """``{task: [{"instruction": ..., "response": ...}, ...]}`` from ``path`` (default: the shipped file), checked."""
    return _load(str(path or TEMPLATES_FILE))


@lru_cache(maxsize=8)
def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    out = {}
    for task, rows in raw.items():
        if task.startswith("_"):
            continue
        if task not in TASKS:
            raise ValueError(f"{path}: unknown task {task!r}; tasks: {', '.join(TASKS)}")
        if not isinstance(rows, list) or not rows:
            raise ValueError(f"{path}: task {task!r} needs a non-empty list of templates")
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or set(row) != {"instruction", "response"}:
                raise ValueError(f"{path}: {task}[{i}] must be an object with 'instruction' and 'response'")
            bad = (_fields(row["instruction"]) | _fields(row["response"])) - FIELDS
            if bad:
                raise ValueError(f"{path}: {task}[{i}] uses unknown placeholders {sorted(bad)}; "
                                 f"allowed {sorted(FIELDS)}")
        out[task] = [dict(r) for r in rows]
    return out


def frame(instruction: str) -> str:
    """The Alpaca prompt around ``instruction`` (ends with ``### Response:``)."""
    return PROMPT_FRAME.format(instruction=instruction)


__all__ = ["PROMPT_FRAME", "TASKS", "TEXT_TASKS", "TASK_GROUPS", "TEMPLATES_FILE", "expand_tasks", "load_templates",
           "frame"]
