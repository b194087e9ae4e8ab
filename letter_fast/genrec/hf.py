"""Trie constraint for Hugging Face ``generate``: a vectorized ``LogitsProcessor``.

Drop-in replacement for ``prefix_allowed_tokens_fn`` with a Python dict trie (the usual way
TIGER / LC-Rec / LETTER code constrains beam search): instead of one Python call per beam per
step, each step is a handful of tensor ops on the model's device, independent of the catalog
size V:

1. map the generated tokens of every row back to codes (a table per level) and walk the
   :class:`~letter_fast.genrec.ItemIndex` trie to each row's node (binary search per level;
   native kernel on CPU; the op :func:`letter_fast.ops.trie_constrain_logits`);
2. gather the row's allowed tokens (its node's child codes, as token ids; only EOS once the
   identifier is complete, or for a row whose prefix is no item's) into a ``[rows, N_t]`` table;
3. keep those scores and set every other token to -inf.

Vocabularies: TIGER-style (``code_token_ids`` a ``[L, N]`` table: the token id of code n at
level l) or LLM-style with added code tokens in blocks (``code_token_ids`` a ``[L]`` vector of
offsets: code n at level l is token ``offset[l] + n``).

The output equals HF's ``PrefixConstrainedLogitsProcessor`` driven by a dict trie that returns
the same allowed tokens, including its rule that a query whose allowed tokens all score -inf is
forced through them with score 0 (pass ``num_beams`` to group rows by query as HF does). The
test ``tests/genrec/test_hf.py`` checks identical beams and scores on a tiny random T5.
"""

from __future__ import annotations

from typing import Optional

import torch

from letter_fast.genrec.item_index import ItemIndex
from letter_fast.ops.trie import trie_allowed_tokens, trie_constrain_logits

try:  # subclass HF's base class when transformers is installed (isinstance checks in generate)
    from transformers import LogitsProcessor as _Base
except Exception:  # pragma: no cover - transformers is an optional dependency (extra "genrec")
    _Base = object


class TrieLogitsProcessor(_Base):
    """Allow only continuations of real items' identifiers, then EOS.

    Args:
        index: the item index (moved to the scores' device on first use, once).
        code_token_ids: ``[L, N]`` token id of each (level, code) (TIGER-style), or ``[L]``
            offsets (LLM-style: token = offset[l] + code). Tensor, list or tuple of ints.
        eos_token_id: the token allowed after the last level (and after it, for rows that
            keep running), and for rows whose prefix is not an item's.
        prompt_length: tokens in each row before the first code (1 for encoder-decoders whose
            decoder starts with ``decoder_start_token_id``; the padded prompt length for
            decoder-only LLMs). None: taken from the first call of each ``generate`` (a call
            whose length is not the previous call's + 1 starts a new generation).
        num_beams: rows per query; given, a query whose allowed tokens all score -inf is forced
            through them with score 0, exactly like HF's ``PrefixConstrainedLogitsProcessor``.
        backend: the backend of the op :func:`letter_fast.ops.trie_constrain_logits` (default
            ``LETTER_FAST_BACKEND``, else ``auto``: one native pass per row on CPU tensors,
            vectorized PyTorch elsewhere); ``cpu`` forces the native pass, ``reference`` PyTorch.
    """

    def __init__(self, index: ItemIndex, code_token_ids, eos_token_id: int, prompt_length: Optional[int] = None,
                 num_beams: Optional[int] = None, backend: Optional[str] = None):
        op = "TrieLogitsProcessor"
        if not isinstance(index, ItemIndex):
            raise TypeError(f"{op}: index must be an ItemIndex, got {type(index).__name__}")
        if index.num_items == 0:
            raise ValueError(f"{op}: the index is empty")
        table = torch.as_tensor(code_token_ids).cpu()
        if table.dtype.is_floating_point or table.dtype == torch.bool:
            raise TypeError(f"{op}: code_token_ids must hold integer token ids, got {table.dtype}")
        L, levels = index.num_levels, index.codes_per_level
        table = table.long()
        if table.dim() == 1:
            if table.numel() != L:
                raise ValueError(f"{op}: code_token_ids as offsets must have one entry per level (L={L}), "
                                 f"got {table.numel()}")
            table = table[:, None] + torch.arange(max(levels))[None, :]
        elif table.dim() != 2 or table.shape[0] != L or table.shape[1] < max(levels):
            raise ValueError(f"{op}: code_token_ids must be [L, N] = [{L}, >= {max(levels)}] token ids or [L] offsets, "
                             f"got shape {tuple(table.shape)}")
        if int(table.min()) < 0:
            raise ValueError(f"{op}: code_token_ids must be >= 0, got {int(table.min())}")
        if not isinstance(eos_token_id, int) or eos_token_id < 0:
            raise ValueError(f"{op}: eos_token_id must be an int >= 0, got {eos_token_id!r}")
        if num_beams is not None and (not isinstance(num_beams, int) or num_beams < 1):
            raise ValueError(f"{op}: num_beams must be an int >= 1, got {num_beams!r}")
        if prompt_length is not None and (not isinstance(prompt_length, int) or prompt_length < 0):
            raise ValueError(f"{op}: prompt_length must be an int >= 0, got {prompt_length!r}")
        self.index = index
        self.eos_token_id = eos_token_id
        self.prompt_length = prompt_length
        self.num_beams = num_beams
        self.backend = backend
        self.min_vocab = max(int(table.max()), eos_token_id) + 1
        # token_of[l, n]: token id of code n at level l; code_of[l, v]: code of token v at level l (-1: none)
        self._token_of = table[:, : max(levels)].contiguous()
        code_of = torch.full((L, self.min_vocab), -1, dtype=torch.long)
        for level in range(L):
            tokens = self._token_of[level, : levels[level]]
            if torch.unique(tokens).numel() != tokens.numel():
                raise ValueError(f"{op}: level {level} maps two codes to one token id")
            code_of[level, tokens] = torch.arange(levels[level])
        self._code_of = code_of
        self._device = torch.device("cpu")
        self._start: Optional[int] = None
        self._last_len: Optional[int] = None

    def reset(self) -> None:
        """Forget the inferred prompt length (only needed with prompt_length=None)."""
        self._start = self._last_len = None

    def _on(self, device: torch.device) -> None:
        if device != self._device:
            self.index = self.index.to(device)
            self._token_of = self._token_of.to(device)
            self._code_of = self._code_of.to(device)
            self._device = device

    def _prompt_start(self, cur_len: int) -> int:
        if self.prompt_length is not None:
            start = self.prompt_length
        else:
            if self._start is None or self._last_len is None or cur_len != self._last_len + 1:
                self._start = cur_len
            start = self._start
        self._last_len = cur_len
        if cur_len < start:
            raise ValueError(f"TrieLogitsProcessor: input_ids have {cur_len} tokens, fewer than prompt_length={start}")
        return start

    def allowed_tokens(self, input_ids: torch.LongTensor, start: Optional[int] = None) -> torch.Tensor:
        """``[rows, W]`` allowed token ids per row (repeats pad a row's list; W = N_t or 1)."""
        start = self._prompt_start(input_ids.shape[1]) if start is None else start
        # the walk op has the same backends as the masking op (reference, cpu): one setting serves both
        return trie_allowed_tokens(self.index, input_ids, start, self._token_of, self._code_of, self.eos_token_id,
                                   backend=self.backend)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.dim() != 2 or input_ids.dim() != 2 or scores.shape[0] != input_ids.shape[0]:
            raise ValueError(f"TrieLogitsProcessor: expected input_ids [rows, len] and scores [rows, vocab], got "
                             f"{tuple(input_ids.shape)} and {tuple(scores.shape)}")
        if scores.shape[1] < self.min_vocab:
            raise ValueError(f"TrieLogitsProcessor: scores have vocab width {scores.shape[1]} but the code tokens and "
                             f"EOS need token ids up to {self.min_vocab - 1}; check code_token_ids / the model's vocab")
        self._on(scores.device)
        input_ids = input_ids.long()
        start = self._prompt_start(input_ids.shape[1])
        out, dead = trie_constrain_logits(self.index, input_ids, scores, start, self._token_of, self._code_of,
                                          self.eos_token_id, backend=self.backend)
        if self.num_beams is not None and scores.shape[0] % self.num_beams == 0 and scores.shape[0]:
            # HF's rule: a query whose allowed tokens all score -inf goes through them at score 0
            if dead is None:
                dead = out.amax(dim=-1).isneginf()
            stuck = dead.view(-1, self.num_beams).all(dim=-1, keepdim=True)
            if bool(stuck.any()):
                allowed = self.allowed_tokens(input_ids, start)
                mask = torch.full_like(scores, float("-inf")).scatter_(1, allowed, 0.0)
                out = torch.where(stuck.repeat_interleave(self.num_beams, dim=0), mask, out)
        return out
