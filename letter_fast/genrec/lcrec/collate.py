"""Tokenization and batching of LC-Rec examples.

Training: ``prompt`` and ``prompt + response`` are tokenized separately; the prompt's ids are normally a prefix of
the full ids, and the rest are the response's. Where they are not (the response's first characters merge with the
prompt's end into other tokens: an ``index2item`` title that starts with punctuation, ``"### Response:" + "."``),
the example is the prompt's own ids followed by the response tokenized alone: the prompt exactly as inference
tokenizes it, the labels exactly the response's. EOS is appended to the full sequence. Batches are RIGHT padded;
labels come from the token counts, never from comparing ids with the pad id (the pad token may be EOS, which is a
label).

``loss_scope`` (which positions carry labels; -100 elsewhere):

* ``"response"`` (default): the response tokens and EOS only.
* ``"sequence"``: prompt and response and EOS, padding excluded.
* ``"letter"``: the LC-Rec/LETTER code's behaviour without ``--only_train_response``: labels are the input ids
  everywhere, padding included (the model is trained to predict pad tokens after EOS). Only to reproduce it.

Inference: prompts LEFT padded so that generation continues every row at the same position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

IGNORE_INDEX = -100
LOSS_SCOPES = ("response", "sequence", "letter")


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token")
    return int(pad)


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; LC-Rec ends every response with EOS")
    return int(tokenizer.eos_token_id)


@dataclass
class TokenizedExamples:
    """``input_ids[i]`` (prompt + response + EOS) and ``prompt_lengths[i]`` (tokens of the prompt), as lists."""

    input_ids: list
    prompt_lengths: list

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> torch.Tensor:
        return torch.tensor([len(x) for x in self.input_ids], dtype=torch.long)


def tokenize_examples(tokenizer, prompts: Sequence[str], responses: Sequence[str], *,
                      max_length: Optional[int] = None) -> TokenizedExamples:
    """Tokenize training examples (see module doc). ``max_length`` cuts the full sequence on the right (the
    LC-Rec code's truncation; None: no cut)."""
    prompts, responses = list(prompts), list(responses)
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    eos = _eos_id(tokenizer)
    prompt_ids = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    full_ids = tokenizer([p + r for p, r in zip(prompts, responses)], add_special_tokens=True)["input_ids"]
    out, lens = [], []
    for i, (p, f) in enumerate(zip(prompt_ids, full_ids)):
        if eos in p[-1:]:  # a tokenizer that appends EOS itself: the prompt must not end the sequence
            p = p[:-1]
        if eos in f[-1:]:
            f = f[:-1]
        if f[: len(p)] != p:
            # the boundary is not a token boundary: keep the prompt's tokens (what generation starts from) and
            # append the response's own
            r = tokenizer(responses[i], add_special_tokens=False)["input_ids"]
            f = p + (r[:-1] if eos in r[-1:] else r)
        f = f + [eos]
        if max_length is not None:
            f = f[:max_length]
        out.append(f)
        lens.append(min(len(p), len(f)))
    return TokenizedExamples(out, lens)


def collate_train(input_ids: Sequence[Sequence[int]], prompt_lengths: Sequence[int], pad_id: int,
                  loss_scope: str = "response") -> dict:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` ``[B, T]`` (see module doc for ``loss_scope``)."""
    if loss_scope not in LOSS_SCOPES:
        raise ValueError(f"loss_scope must be one of {LOSS_SCOPES}, got {loss_scope!r}")
    if not len(input_ids):
        raise ValueError("collate_train: empty batch")
    lengths = torch.tensor([len(x) for x in input_ids], dtype=torch.long)
    plen = torch.as_tensor(list(prompt_lengths), dtype=torch.long)
    B, T = len(input_ids), int(lengths.max())
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    for i, row in enumerate(input_ids):
        ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    pos = torch.arange(T)[None, :]
    mask = pos < lengths[:, None]
    if loss_scope == "letter":
        labels = ids.clone()
    else:
        keep = mask if loss_scope == "sequence" else mask & (pos >= plen[:, None])
        labels = torch.where(keep, ids, torch.full_like(ids, IGNORE_INDEX))
    return {"input_ids": ids, "attention_mask": mask.long(), "labels": labels}


def collate_prompts(prompt_ids: Sequence[Sequence[int]], pad_id: int) -> dict:
    """Left-padded ``input_ids`` and ``attention_mask`` ``[B, T]`` for generation."""
    if not len(prompt_ids):
        raise ValueError("collate_prompts: empty batch")
    lengths = torch.tensor([len(x) for x in prompt_ids], dtype=torch.long)
    B, T = len(prompt_ids), int(lengths.max())
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    for i, row in enumerate(prompt_ids):
        if len(row):
            ids[i, T - len(row):] = torch.as_tensor(row, dtype=torch.long)
    mask = torch.arange(T)[None, :] >= (T - lengths)[:, None]
    return {"input_ids": ids, "attention_mask": mask.long()}


class TrainCollator:
    """Examples (``LCRecExamples`` rows, or ``(prompt, response)`` pairs) -> a training batch."""

    def __init__(self, tokenizer, loss_scope: str = "response", max_length: Optional[int] = None):
        if loss_scope not in LOSS_SCOPES:
            raise ValueError(f"loss_scope must be one of {LOSS_SCOPES}, got {loss_scope!r}")
        self.tokenizer, self.loss_scope, self.max_length = tokenizer, loss_scope, max_length
        self.pad_id = _pad_id(tokenizer)

    def __call__(self, batch) -> dict:
        prompts, responses = _texts(batch)
        tok = tokenize_examples(self.tokenizer, prompts, responses, max_length=self.max_length)
        return collate_train(tok.input_ids, tok.prompt_lengths, self.pad_id, self.loss_scope)


class PromptCollator:
    """Prompts (``LCRecExamples`` rows or strings) -> a left-padded generation batch."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.pad_id = _pad_id(tokenizer)

    def __call__(self, batch) -> dict:
        prompts = list(batch.prompt) if hasattr(batch, "prompt") else [p if isinstance(p, str) else p[0] for p in batch]
        ids = self.tokenizer(prompts, add_special_tokens=True)["input_ids"]
        eos = self.tokenizer.eos_token_id
        ids = [row[:-1] if eos is not None and row[-1:] == [eos] else row for row in ids]
        return collate_prompts(ids, self.pad_id)


def _texts(batch):
    if hasattr(batch, "prompt") and hasattr(batch, "response"):
        return list(batch.prompt), list(batch.response)
    pairs = list(batch)
    return [p for p, _ in pairs], [r for _, r in pairs]


__all__ = ["IGNORE_INDEX", "LOSS_SCOPES", "TokenizedExamples", "tokenize_examples", "collate_train",
           "collate_prompts", "TrainCollator", "PromptCollator"]
