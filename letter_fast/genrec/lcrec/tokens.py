"""Code tokens of LC-Rec: one added LLM token per (level, code), ``<a_12>``, ``<b_7>``, ...

LC-Rec (Zheng et al., "Adapting Large Language Models by Integrating Collaborative Semantics for
Recommendation", ICDE 2024) writes an item as the concatenation of its code tokens, ``<a_12><b_7><c_0><d_99>``,
and extends a causal LLM's vocabulary with every such token.

Two orders of the added tokens:

* ``order="numeric"`` (default): all ``L x N`` tokens level-major in numeric code order, so the token of code
  ``n`` at level ``l`` is ``offset[l] + n`` with ``offset[l] = base + sum_{k<l} N_k`` (``base`` = the
  tokenizer's length before). Every code exists, whether or not an index uses it, so one vocabulary serves
  every index of that shape. :class:`~letter_fast.genrec.hf.TrieLogitsProcessor` takes the ``[L]`` offsets.
* ``order="authors"``: the tokens the LC-Rec code adds, to load its checkpoints: only the code tokens that
  occur in a given index, sorted as text (``<a_0>, <a_1>, <a_10>, <a_100>, <a_101>, ...``). Ids are then not
  ``offset + code``; :attr:`CodeTokens.table` is the ``[L, N]`` token id per (level, code) with -1 where the
  index never uses the code.

New embedding rows start at the mean of the existing rows (or, ``init="normal"``, random normal around the
mean with the existing rows' per-dimension std); a tied output embedding shares them, an untied one gets
the same treatment from its own rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from letter_fast.data.formats import LEVEL_LETTERS, code_token
from letter_fast.io import PathLike, atomic_write

ORDERS = ("numeric", "authors")
INITS = ("mean", "normal")
CODE_TOKENS_FILE = "code_tokens.json"


class CodeTokenError(ValueError):
    """The tokenizer cannot hold the code tokens as LC-Rec needs them (message says what and what to do)."""


def item_string(codes: Sequence[int]) -> str:
    """One item's codes ``[L]`` -> its code-token string: ``[12, 7] -> "<a_12><b_7>"``."""
    if isinstance(codes, torch.Tensor):
        codes = codes.tolist()
    return "".join(code_token(level, c) for level, c in enumerate(codes))


def item_strings(codes: torch.Tensor) -> list[str]:
    """Every item's code-token string, ``codes [V, L]`` -> ``V`` strings (one token string per level, built once)."""
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2:
        raise ValueError(f"item codes must be a [V, L] tensor, got {getattr(codes, 'shape', type(codes).__name__)}")
    if codes.numel() and int(codes.min()) < 0:
        raise ValueError(f"item codes must be >= 0, found {int(codes.min())}")
    n = int(codes.max()) + 1 if codes.numel() else 0
    parts = [[code_token(level, c) for c in range(n)] for level in range(codes.shape[1])]
    return ["".join(parts[level][c] for level, c in enumerate(row)) for row in codes.tolist()]


@dataclass
class CodeTokens:
    """Where the code tokens sit in a tokenizer's vocabulary.

    ``table [L, N]`` is the token id of code ``n`` at level ``l`` (-1: no token, only in ``authors`` order);
    ``num_codes[l]`` the codes of level ``l``; ``offsets`` the ``[L]`` first ids when ``order == "numeric"``
    (then ``table[l, n] == offsets[l] + n``), else None; ``base`` the tokenizer length before the tokens were
    added; ``vocab_size`` its length after.
    """

    order: str
    num_codes: tuple
    table: torch.Tensor
    base: int
    vocab_size: int
    offsets: Optional[tuple] = None

    @property
    def num_levels(self) -> int:
        return len(self.num_codes)

    @property
    def token_ids(self) -> list[int]:
        """Every code token's id, ascending (the rows ``embeddings="new_rows"`` trains)."""
        return sorted(int(t) for t in self.table[self.table >= 0].tolist())

    def strings(self) -> list[str]:
        """The code-token strings in id order."""
        ids = self.table
        pairs = [(int(ids[lv, c]), code_token(lv, c))
                 for lv in range(self.num_levels) for c in range(self.num_codes[lv]) if int(ids[lv, c]) >= 0]
        return [s for _, s in sorted(pairs)]

    def code_token_ids(self) -> torch.Tensor:
        """What :class:`~letter_fast.genrec.hf.TrieLogitsProcessor` takes as ``code_token_ids``.

        Numeric order: the ``[L]`` offsets. Authors' order: the ``[L, N]`` table with each -1 (a code the index
        never uses, so the trie never allows it) replaced by a distinct id of that level that no code uses,
        because the processor needs one non-negative, per-level unique id per code.
        """
        if self.offsets is not None:
            return torch.tensor(self.offsets, dtype=torch.long)
        table = self.table.clone()
        for level in range(self.num_levels):
            row = table[level]
            missing = (row < 0).nonzero().flatten()
            if missing.numel():
                used = set(row[row >= 0].tolist())
                # other levels' code tokens first, then the base vocabulary from its end (away from the
                # low ids where special tokens such as EOS usually sit)
                others = [t for t in self.token_ids if t not in used]
                spare = others + [t for t in range(self.base - 1, -1, -1) if t not in used]
                if len(spare) < missing.numel():
                    raise CodeTokenError("code_token_ids: not enough token ids to fill the unused codes")
                row[missing] = torch.tensor(spare[: missing.numel()], dtype=torch.long)
        return table

    def encode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [..., L]`` -> token ids of the same shape (error on a code without a token)."""
        codes = torch.as_tensor(codes).long()
        if codes.shape[-1] != self.num_levels:
            raise CodeTokenError(f"codes have {codes.shape[-1]} levels, the code tokens {self.num_levels}")
        self.check_codes(codes.reshape(-1, self.num_levels))
        levels = torch.arange(self.num_levels, device=codes.device).expand_as(codes)
        return self.table.to(codes.device)[levels, codes]

    def decode(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``[..., L]`` (one identifier per row) -> codes; -1 where a token is not that level's code."""
        token_ids = torch.as_tensor(token_ids).long()
        out = torch.full_like(token_ids, -1)
        for level in range(self.num_levels):
            row = self.table[level].to(token_ids.device)
            tokens = token_ids[..., level]
            hit = tokens[..., None] == row
            out[..., level] = torch.where(hit.any(-1), hit.float().argmax(-1), torch.full_like(tokens, -1))
        return out

    def check_codes(self, codes: torch.Tensor, source: str = "item codes") -> None:
        """Every identifier ``codes [V, L]`` has a token per level (level count and code ranges fit)."""
        if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or codes.dtype.is_floating_point:
            raise CodeTokenError(f"{source} must be an integer [V, L] tensor, got "
                                 f"{getattr(codes, 'shape', type(codes).__name__)}")
        if codes.shape[1] != self.num_levels:
            raise CodeTokenError(f"{source} have {codes.shape[1]} levels but the tokenizer holds code tokens for "
                                 f"{self.num_levels}; add the code tokens for this index")
        if codes.numel() == 0:
            return
        if int(codes.min()) < 0:
            raise CodeTokenError(f"{source}: codes must be >= 0, found {int(codes.min())}")
        for level in range(self.num_levels):
            col = codes[:, level]
            if int(col.max()) >= self.num_codes[level]:
                item = int((col >= self.num_codes[level]).nonzero()[0])
                raise CodeTokenError(f"{source}: item {item} has code {int(col[item])} at level {level}, but the "
                                     f"tokenizer holds codes 0..{self.num_codes[level] - 1} there")
            ids = self.table[level, col]
            if bool((ids < 0).any()):
                item = int((ids < 0).nonzero()[0])
                raise CodeTokenError(f"{source}: item {item} uses {code_token(level, int(col[item]))}, which the "
                                     "tokenizer does not hold (authors' order adds only the codes of one index)")

    def check_tokenizer(self, tokenizer) -> None:
        """Each code token is in ``tokenizer`` at its id and encodes to exactly that one id."""
        for level in range(self.num_levels):
            for code in range(self.num_codes[level]):
                want = int(self.table[level, code])
                if want < 0:
                    continue
                text = code_token(level, code)
                got = tokenizer.convert_tokens_to_ids(text)
                if got != want:
                    raise CodeTokenError(f"code token {text} has id {got} in the tokenizer, expected {want}; the "
                                         "tokenizer does not match these code-token metadata")
        check_single_tokens(tokenizer, self.strings())

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict:
        return {"order": self.order, "num_codes": list(self.num_codes), "base": self.base,
                "vocab_size": self.vocab_size, "offsets": list(self.offsets) if self.offsets is not None else None,
                "table": self.table.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> CodeTokens:
        try:
            return cls(order=d["order"], num_codes=tuple(d["num_codes"]),
                       table=torch.tensor(d["table"], dtype=torch.long),
                       base=int(d["base"]), vocab_size=int(d["vocab_size"]),
                       offsets=tuple(d["offsets"]) if d.get("offsets") is not None else None)
        except (KeyError, TypeError) as exc:
            raise CodeTokenError(f"code-token metadata incomplete or malformed ({exc!r})") from exc

    def save(self, folder: PathLike):
        from pathlib import Path

        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f)
        return atomic_write(Path(folder) / CODE_TOKENS_FILE, write)

    @classmethod
    def load(cls, folder: PathLike) -> CodeTokens:
        from pathlib import Path

        path = Path(folder) / CODE_TOKENS_FILE
        if not path.exists():
            raise FileNotFoundError(f"code-token metadata not found: {path} (not an LC-Rec model folder?)")
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


def check_single_tokens(tokenizer, strings: Sequence[str]) -> None:
    """Every string encodes to exactly one token id (without special tokens); one clear error line otherwise.

    Also encodes them all concatenated, as an item is written, and checks that this gives one id per string.
    """
    strings = list(strings)
    if not strings:
        return
    encoded = tokenizer(strings, add_special_tokens=False)["input_ids"]
    for text, ids in zip(strings, encoded):
        if len(ids) != 1:
            raise CodeTokenError(f"code token {text} encodes to {len(ids)} token ids {ids[:8]} instead of one; the "
                                 "tokenizer splits it (was it added with tokenizer.add_tokens?)")
    joined = tokenizer("".join(strings[:64]), add_special_tokens=False)["input_ids"]
    if joined != [ids[0] for ids in encoded[:64]]:
        raise CodeTokenError("code tokens written back to back do not encode to one id each: the tokenizer merges "
                             "or splits them across token boundaries")


def _level_counts(num_levels: Optional[int], num_codes: Union[int, Sequence[int], None],
                  codes: Optional[torch.Tensor]) -> tuple:
    if codes is not None:
        if (not isinstance(codes, torch.Tensor) or codes.dim() != 2 or codes.dtype.is_floating_point
                or not codes.numel()):
            raise CodeTokenError(f"codes must be a non-empty integer [V, L] tensor, got "
                                 f"{getattr(codes, 'shape', type(codes).__name__)}")
        if int(codes.min()) < 0:
            raise CodeTokenError(f"codes must be >= 0, found {int(codes.min())}")
        if num_levels is not None and num_levels != codes.shape[1]:
            raise CodeTokenError(f"num_levels={num_levels} but the codes have {codes.shape[1]} levels")
        num_levels = codes.shape[1]
    if num_levels is None:
        raise CodeTokenError("give num_levels (and num_codes) or the item codes")
    if num_codes is None:
        if codes is None:
            raise CodeTokenError("give num_codes (codes per level) or the item codes")
        num_codes = [int(codes.max()) + 1] * num_levels  # one width for all levels: offsets = base + l * N
    elif isinstance(num_codes, int):
        num_codes = [num_codes] * num_levels
    num_codes = tuple(int(n) for n in num_codes)
    if len(num_codes) != num_levels:
        raise CodeTokenError(f"num_codes has {len(num_codes)} entries for {num_levels} levels")
    if num_levels < 1 or num_levels > len(LEVEL_LETTERS) or min(num_codes) < 1:
        raise CodeTokenError(f"need 1..{len(LEVEL_LETTERS)} levels of >= 1 codes, got {num_levels} levels of "
                             f"{num_codes}")
    return num_codes


def add_code_tokens(tokenizer, model=None, *, num_levels: Optional[int] = None,
                    num_codes: Union[int, Sequence[int], None] = None, codes: Optional[torch.Tensor] = None,
                    order: str = "numeric", init: str = "mean", generator: Optional[torch.Generator] = None
                    ) -> CodeTokens:
    """Add the code tokens to ``tokenizer`` (and grow ``model``'s embeddings); return where they are.

    Args:
        tokenizer: a Hugging Face tokenizer (changed in place).
        model: a causal LM whose input (and output) embeddings get the new rows, or None (tokenizer only).
        num_levels, num_codes: the shape of the code space, ``num_codes`` an int or one per level; default from
            ``codes`` (its levels; largest code + 1 for every level).
        codes: ``[V, L]`` item codes: checked to fit; in ``order="authors"`` they decide which tokens exist.
        order: ``"numeric"`` (token = offset[l] + code) or ``"authors"`` (the LC-Rec code's order, see module doc).
        init: ``"mean"`` (new rows = mean of the existing rows) or ``"normal"`` (normal around that mean with
            the existing rows' per-dimension std, drawn with ``generator``).

    Raises :class:`CodeTokenError` if a code token already exists in the tokenizer (the ids would not be
    contiguous), if one does not encode to exactly one id, or if the codes do not fit.
    """
    if order not in ORDERS:
        raise CodeTokenError(f"order must be one of {ORDERS}, got {order!r}")
    if init not in INITS:
        raise CodeTokenError(f"init must be one of {INITS}, got {init!r}")
    if order == "authors" and codes is None:
        raise CodeTokenError("order='authors' adds only the codes of an index: pass codes")
    num_codes = _level_counts(num_levels, num_codes, codes)
    L = len(num_codes)
    base = len(tokenizer)
    table = torch.full((L, max(num_codes)), -1, dtype=torch.long)
    if order == "numeric":
        strings = [code_token(lv, c) for lv in range(L) for c in range(num_codes[lv])]
        starts = [base + sum(num_codes[:lv]) for lv in range(L)]
        for lv in range(L):
            table[lv, : num_codes[lv]] = starts[lv] + torch.arange(num_codes[lv])
        offsets = tuple(starts)
    else:
        used = {(lv, c) for row in codes.tolist() for lv, c in enumerate(row)}
        strings = sorted(code_token(lv, c) for lv, c in used)  # the authors' sorted(set(...)) of the index's tokens
        for rank, text in enumerate(strings):
            lv, c = LEVEL_LETTERS.index(text[1]), int(text[3:-1])
            table[lv, c] = base + rank
        offsets = None
    vocab = tokenizer.get_vocab()  # built anew by every call: once
    clash = [s for s in strings if s in vocab]
    if clash:
        raise CodeTokenError(f"the tokenizer already holds {len(clash)} code tokens (first {clash[0]}); adding them "
                             "again would not give contiguous ids. Start from the base tokenizer, or load the saved "
                             "code-token metadata with CodeTokens.load")
    added = tokenizer.add_tokens(strings)
    got = tokenizer.convert_tokens_to_ids(strings)
    want = list(range(base, base + len(strings)))
    if added != len(strings) or got != want:
        bad = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), 0)
        raise CodeTokenError(f"code tokens did not get contiguous ids after adding: {strings[bad]} has id {got[bad]}, "
                             f"expected {want[bad]} (tokenizer length was {base})")
    tokens = CodeTokens(order=order, num_codes=num_codes, table=table, base=base, vocab_size=len(tokenizer),
                        offsets=offsets)
    check_single_tokens(tokenizer, strings)
    if codes is not None:
        tokens.check_codes(codes)
    if model is not None:
        resize_embeddings(model, tokens, init=init, generator=generator)
    return tokens


@torch.no_grad()
def _init_rows(weight: torch.Tensor, rows: torch.Tensor, old: int, init: str, generator) -> None:
    ref = weight[:old].float()
    mean = ref.mean(0)
    if init == "mean":
        new = mean.expand(rows.numel(), -1)
    else:
        std = ref.std(0)
        noise = torch.randn(rows.numel(), weight.shape[1], generator=generator, dtype=torch.float32)
        new = mean + noise * std
    weight[rows] = new.to(weight.dtype)


def resize_embeddings(model, tokens: CodeTokens, *, init: str = "mean", generator: Optional[torch.Generator] = None
                      ) -> None:
    """Grow ``model``'s embeddings to hold ``tokens.vocab_size`` ids and initialize the code-token rows.

    The rows' statistics come from the ``tokens.base`` rows of the original vocabulary. Models whose embedding is
    already larger (padded vocabularies, e.g. Qwen2) are not shrunk; their code-token rows are initialized all
    the same. A tied output embedding is the same tensor and gets the rows once; an untied one from its own rows.
    """
    if init not in INITS:
        raise CodeTokenError(f"init must be one of {INITS}, got {init!r}")
    emb = model.get_input_embeddings()
    if emb.weight.shape[0] < tokens.vocab_size:
        model.resize_token_embeddings(tokens.vocab_size, mean_resizing=False)
    rows = torch.tensor(tokens.token_ids, dtype=torch.long)
    old = min(tokens.base, model.get_input_embeddings().weight.shape[0])
    inp = model.get_input_embeddings().weight
    _init_rows(inp, rows, old, init, generator)
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != inp.data_ptr():
        _init_rows(out.weight, rows, old, init, generator)


__all__ = ["CodeTokens", "CodeTokenError", "add_code_tokens", "resize_embeddings", "check_single_tokens",
           "item_string", "item_strings", "ORDERS", "INITS", "CODE_TOKENS_FILE"]
