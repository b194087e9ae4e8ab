"""The field's json layout (LC-Rec / LETTER), read and written as it is.

One data set ``<Name>`` is a folder holding

* ``<Name>.inter.json``  ``{"<user id>": [item id, ...]}``: each user's interactions in time order;
  user and item ids are 0-based and contiguous.
* ``<Name>.item.json``   ``{"<item id>": {"title": ..., "description": ..., "brand": ..., "categories": ...}}``
  (optional): item text for semantic embeddings.
* ``<Name>.index.json``  ``{"<item id>": ["<a_12>", "<b_201>", "<c_7>", "<d_99>"]}`` (optional): an item
  tokenization; level ``l`` of an identifier is written ``<{letter l}_{code}>`` with letters a, b, c, ...

Every reader validates what it reads and names the file and the first bad entry, so a user bringing their
own data learns what to fix. Every writer writes a temporary file and renames it (``letter_fast.io``).

The data root (the folder holding one folder per data set) is an explicit argument, else the
``LETTER_FAST_DATA`` environment variable; data sets are always read where they lie, never copied.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from letter_fast.io import PathLike, atomic_write

ENV_DATA_ROOT = "LETTER_FAST_DATA"
LEVEL_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_CODE_TOKEN = re.compile(r"^<([a-z])_(0|[1-9][0-9]*)>$")
_ITEM_TEXT_FIELDS = ("title", "description", "brand", "categories")


class DataFormatError(ValueError):
    """A data file exists but its content is not what the format says (the message names file and entry)."""


# --------------------------------------------------------------------------------------------- helpers

def _read_json(path: PathLike, what: str):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if path.is_dir():
        raise DataFormatError(f"{path} is a folder, expected a {what} json file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: not valid json ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not utf-8 text ({exc})") from exc


def _write_json(path: PathLike, obj, indent: Optional[int]) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent, ensure_ascii=False)
    return atomic_write(path, write)


def _contiguous_keys(obj, path: PathLike, kind: str) -> list:
    """Check that ``obj`` is a dict keyed by "0".."n-1" (any order); return the values in id order."""
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: expected a json object keyed by {kind} id, got a {type(obj).__name__}")
    ids = {}
    for key in obj:
        try:
            ident = int(key)
        except (TypeError, ValueError):
            raise DataFormatError(f"{path}: {kind} id {key!r} is not an integer") from None
        if str(ident) != key.strip() or ident < 0:
            raise DataFormatError(f"{path}: {kind} id {key!r} is not a non-negative integer written plainly")
        if ident in ids:
            raise DataFormatError(f"{path}: {kind} id {ident} appears twice ({ids[ident]!r} and {key!r})")
        ids[ident] = key
    n = len(ids)
    if n and max(ids) != n - 1:
        missing = next(i for i in range(n) if i not in ids)
        raise DataFormatError(
            f"{path}: {kind} ids must be contiguous 0..{n - 1} ({n} entries), but {kind} {missing} is missing "
            f"(largest id {max(ids)}); renumber the {kind}s"
        )
    return [obj[ids[i]] for i in range(n)]


# ---------------------------------------------------------------------------------------- inter.json

def read_inter_json(path: PathLike, num_items: Optional[int] = None) -> list[list[int]]:
    """Read ``<Name>.inter.json`` into ``histories[user] = [item, ...]`` (time order).

    Checks: contiguous user ids, non-empty histories of non-negative integer item ids, and (when
    ``num_items`` is given) every item id ``< num_items``.
    """
    obj = _read_json(path, "interactions")
    rows = _contiguous_keys(obj, path, "user")
    histories: list[list[int]] = []
    for user, row in enumerate(rows):
        if not isinstance(row, list):
            raise DataFormatError(f"{path}: user {user}: expected a list of item ids, got {type(row).__name__}")
        if not row:
            raise DataFormatError(f"{path}: user {user} has an empty history; drop the user or renumber")
        for pos, item in enumerate(row):
            if isinstance(item, bool) or not isinstance(item, int) or item < 0:
                raise DataFormatError(
                    f"{path}: user {user}, position {pos}: item id {item!r} is not a non-negative integer")
            if num_items is not None and item >= num_items:
                raise DataFormatError(
                    f"{path}: user {user}, position {pos}: unknown item {item} (the catalog has {num_items} items, "
                    f"ids 0..{num_items - 1})")
        histories.append(row)
    return histories


def write_inter_json(path: PathLike, histories: Sequence[Sequence[int]], indent: Optional[int] = None) -> Path:
    """Write ``histories`` (a list per user, time order) as ``<Name>.inter.json``, atomically."""
    obj = {}
    for user, row in enumerate(histories):
        row = [int(i) for i in (row.tolist() if isinstance(row, torch.Tensor) else row)]
        if not row:
            raise ValueError(f"write_inter_json: user {user} has an empty history; the format does not allow it")
        if min(row) < 0:
            raise ValueError(f"write_inter_json: user {user} has a negative item id {min(row)}")
        obj[str(user)] = row
    return _write_json(path, obj, indent)


# ----------------------------------------------------------------------------------------- item.json

def read_item_json(path: PathLike, num_items: Optional[int] = None) -> list[dict]:
    """Read ``<Name>.item.json`` into ``items[item] = {"title": ..., ...}`` (contiguous item ids).

    Values of the text fields must be strings (``categories`` may also be a list of strings, joined
    with ", "); missing fields are allowed (an empty string is used). ``num_items``, when given, must
    equal the number of entries.
    """
    obj = _read_json(path, "item text")
    rows = _contiguous_keys(obj, path, "item")
    if num_items is not None and len(rows) != num_items:
        raise DataFormatError(
            f"{path}: {len(rows)} items, but the interactions use {num_items}; item text must cover every item")
    items: list[dict] = []
    for ident, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataFormatError(f"{path}: item {ident}: expected an object with title/description, "
                                  f"got {type(row).__name__}")
        clean = dict(row)
        for key in _ITEM_TEXT_FIELDS:
            value = row.get(key, "")
            if value is None:
                value = ""
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                value = ", ".join(value)
            if not isinstance(value, str):
                raise DataFormatError(f"{path}: item {ident}: field {key!r} must be text, got {type(value).__name__}")
            clean[key] = value
        items.append(clean)
    return items


def write_item_json(path: PathLike, items: Sequence[Mapping], indent: Optional[int] = 2) -> Path:
    """Write ``items`` (one dict of text fields per item) as ``<Name>.item.json``, atomically."""
    return _write_json(path, {str(i): dict(row) for i, row in enumerate(items)}, indent)


# ---------------------------------------------------------------------------------------- index.json

def code_token(level: int, code: int) -> str:
    """The token of ``code`` at ``level`` (0-based): ``code_token(1, 7) == "<b_7>"``."""
    if not 0 <= level < len(LEVEL_LETTERS):
        raise ValueError(f"level {level} out of range: the format has levels a..z (0..25)")
    return f"<{LEVEL_LETTERS[level]}_{int(code)}>"


def index_to_codes(index: Mapping[str, Sequence[str]], source: str = "index") -> torch.Tensor:
    """``{"<item>": ["<a_12>", "<b_201>", ...]}`` -> LongTensor ``[V, L]`` of codes.

    Item ids must be contiguous, every identifier must have the same length ``L``, and token ``l`` must
    be ``<{letter l}_{non-negative integer}>``. ``source`` names the file in error messages.
    """
    rows = _contiguous_keys(index, source, "item")
    if not rows:
        return torch.zeros(0, 0, dtype=torch.long)
    levels = None
    codes: list[list[int]] = []
    for item, tokens in enumerate(rows):
        if not isinstance(tokens, list) or not tokens:
            raise DataFormatError(f"{source}: item {item}: expected a non-empty list of code tokens, got {tokens!r}")
        if levels is None:
            levels = len(tokens)
        elif len(tokens) != levels:
            raise DataFormatError(
                f"{source}: item {item} has {len(tokens)} code tokens, item 0 has {levels}; all identifiers must "
                "have the same number of levels")
        row = []
        for level, token in enumerate(tokens):
            match = _CODE_TOKEN.match(token) if isinstance(token, str) else None
            if match is None or match.group(1) != LEVEL_LETTERS[level]:
                expected = f"<{LEVEL_LETTERS[level]}_N>" if level < len(LEVEL_LETTERS) else "(no letter)"
                raise DataFormatError(
                    f"{source}: item {item}, level {level}: malformed code token {token!r}, expected {expected} "
                    "with N a non-negative integer")
            row.append(int(match.group(2)))
        codes.append(row)
    return torch.tensor(codes, dtype=torch.long)


def codes_to_index(codes: torch.Tensor) -> dict[str, list[str]]:
    """LongTensor ``[V, L]`` of codes -> ``{"<item>": ["<a_..>", "<b_..>", ...]}``."""
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2:
        raise ValueError(f"codes must be a [V, L] tensor, got {getattr(codes, 'shape', type(codes).__name__)}")
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise TypeError(f"codes must be an integer tensor, got {codes.dtype}")
    if codes.shape[1] > len(LEVEL_LETTERS):
        raise ValueError(f"codes have {codes.shape[1]} levels; the format has at most {len(LEVEL_LETTERS)} (a..z)")
    if codes.numel() and int(codes.min()) < 0:
        bad = (codes < 0).nonzero()[0].tolist()
        raise ValueError(f"codes must be non-negative, item {bad[0]} level {bad[1]} is {int(codes[bad[0], bad[1]])}")
    letters = LEVEL_LETTERS[: codes.shape[1]]
    return {str(item): [f"<{letters[level]}_{c}>" for level, c in enumerate(row)]
            for item, row in enumerate(codes.tolist())}


def read_index_json(path: PathLike, num_items: Optional[int] = None) -> torch.Tensor:
    """Read ``<Name>.index.json`` into a LongTensor ``[V, L]`` (row = item id).

    A file in the layout :func:`write_index_json` writes (``json.dump`` with no indent, items in id order) is
    parsed from its bytes with numpy and verified by re-rendering it chunk by chunk (no per-item Python object;
    1e7 items in seconds); any other layout goes through ``json.load`` and the validating reader.
    """
    codes = _read_index_canonical(path)
    if codes is None:
        codes = index_to_codes(_read_json(path, "item index"), source=str(path))
    if num_items is not None and codes.shape[0] != num_items:
        raise DataFormatError(f"{path}: identifiers for {codes.shape[0]} items, the catalog has {num_items}")
    return codes


def write_index_json(path: PathLike, codes, indent: Optional[int] = None, chunk_rows: int = 1 << 16) -> Path:
    """Write a ``[V, L]`` code tensor (or integer array) as ``<Name>.index.json`` (readable by the LC-Rec/LETTER
    tools), atomically.

    With ``indent=None`` the file is streamed ``chunk_rows`` items at a time, byte for byte what
    ``json.dump(codes_to_index(codes))`` writes, without building the dict (1e7 items: no per-item objects).
    """
    if not isinstance(codes, torch.Tensor):
        codes = torch.from_numpy(np.ascontiguousarray(codes))
    if indent is not None:
        return _write_json(path, codes_to_index(codes), indent)
    codes_to_index(codes[:0])            # the checks on shape and dtype
    if codes.numel() and int(codes.min()) < 0:
        bad = (codes < 0).nonzero()[0].tolist()
        raise ValueError(f"codes must be non-negative, item {bad[0]} level {bad[1]} is {int(codes[bad[0], bad[1]])}")
    array = codes.numpy() if codes.device.type == "cpu" else codes.cpu().numpy()

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("{")
            for start in range(0, array.shape[0], chunk_rows):
                f.write(_render_index_rows(array[start:start + chunk_rows], start))
            f.write("}")
    return atomic_write(path, write)


def read_codes(path: PathLike, num_items: Optional[int] = None, *, num_levels: Optional[int] = None,
               codebook_size: Optional[int] = None, extra_levels: bool = True) -> torch.Tensor:
    """Identifiers ``[V, L']`` from ``<Name>.codes.npy`` (the fast path: one binary read) or ``<Name>.index.json``,
    checked against the catalog (``num_items``) and the tokenizer they are meant for: at least ``num_levels``
    levels (exactly, unless ``extra_levels``: the disambiguation levels of collision re-assignment) and every code
    in ``[0, codebook_size)``. One clear error naming the file, the item and the level otherwise."""
    path = Path(path)
    if path.suffix == ".npy":
        if not path.exists():
            raise FileNotFoundError(f"codes file not found: {path}")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise DataFormatError(f"{path}: not a .npy codes file ({exc})") from exc
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
            raise DataFormatError(f"{path}: codes must be a [V, L] integer array, got {array.dtype} {array.shape}")
        codes = torch.from_numpy(np.array(array, dtype=np.int64))
    else:
        codes = read_index_json(path)
    V, levels = codes.shape
    if num_items is not None and V != num_items:
        raise DataFormatError(f"{path}: identifiers for {V} items, the catalog has {num_items}")
    if num_levels is not None and (levels < num_levels or (levels > num_levels and not extra_levels)):
        raise DataFormatError(f"{path}: identifiers have {levels} levels, the tokenizer has {num_levels}"
                              + (" (plus extra disambiguation levels)" if extra_levels else ""))
    if codebook_size is not None and codes.numel():
        bad = (codes < 0) | (codes >= codebook_size)
        if bool(bad.any()):
            item, level = bad.nonzero()[0].tolist()
            raise DataFormatError(f"{path}: item {item}, level {level}: code {int(codes[item, level])} is outside "
                                  f"[0, {codebook_size}) (the tokenizer has {codebook_size} codes per level)")
    return codes


def _render_index_rows(block: np.ndarray, start: int) -> str:
    """``"<id>": ["<a_..>", ...]`` entries of items ``start..`` joined as json.dump joins them (``", "``)."""
    V, L = block.shape
    if V == 0:
        return ""
    out = np.array(['"' + str(i) + '": [' for i in range(start, start + V)] if V < 64 else
                   np.char.add(np.char.add('"', np.arange(start, start + V).astype(str)), '": [').astype(object),
                   dtype=object)
    for level in range(L):
        column = block[:, level]
        table = np.array([f'"<{LEVEL_LETTERS[level]}_{c}>"' for c in range(int(column.max()) + 1)], dtype=object)
        out = out + table[column] + ("]" if level == L - 1 else ", ")
    if L == 0:
        out = out + "]"
    text = ", ".join(out.tolist())
    return text if start == 0 else ", " + text


def _read_index_canonical(path: PathLike, block_bytes: int = 1 << 26) -> Optional[torch.Tensor]:
    """Codes of an index.json in :func:`write_index_json`'s layout, or None (then the general reader runs).

    Read ``block_bytes`` at a time, cut after the last complete entry (``]``) of the block, so memory stays at a
    few blocks whatever the file's size; each block is parsed with numpy and must equal its re-rendering byte for
    byte (which proves the layout, the ids 0..V-1 in order and the tokens)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size < 2:
        return None
    blocks, start, levels, carry = [], 0, None, b""
    with open(path, "rb") as f:
        first = True
        while True:
            chunk = f.read(block_bytes)
            data = carry + chunk
            if not chunk:
                break
            cut = data.rfind(b"]")
            if cut < 0:
                carry = data
                continue
            body, carry = data[: cut + 1], data[cut + 1:]
            if first:
                if not body.startswith(b"{"):
                    return None
                body, first = body[1:], False
            codes = _parse_index_block(np.frombuffer(body, dtype=np.uint8), start, levels)
            if codes is None:
                return None
            levels = codes.shape[1]
            blocks.append(codes)
            start += codes.shape[0]
    if first or carry != b"}" or not blocks:
        return None
    return torch.from_numpy(np.concatenate(blocks))


def _parse_index_block(data: np.ndarray, start: int, levels: Optional[int]) -> Optional[np.ndarray]:
    """Codes of the entries ``start..`` written in ``data`` (canonical layout, leading ``", "`` unless start = 0)."""
    lt, gt = np.flatnonzero(data == ord("<")), np.flatnonzero(data == ord(">"))
    colons, quotes = np.flatnonzero(data == ord(":")), np.flatnonzero(data == ord('"'))
    V = colons.size
    if V == 0 or lt.size != gt.size or lt.size % V or lt.size == 0 or np.any(gt <= lt + 3):
        return None
    L = lt.size // V
    if L > len(LEVEL_LETTERS) or (levels is not None and L != levels):
        return None
    values = _parse_digits(data, lt + 3, gt)
    key_open = quotes[np.searchsorted(quotes, colons - 1) - 1]
    ids = _parse_digits(data, key_open + 1, colons - 1)
    if values is None or ids is None or not np.array_equal(ids, np.arange(start, start + V)):
        return None
    codes = values.reshape(V, L)
    text = _render_index_rows(codes, start).encode("utf-8")
    if len(text) != data.size or not np.array_equal(data, np.frombuffer(text, dtype=np.uint8)):
        return None
    return codes


def _parse_digits(data: np.ndarray, start: np.ndarray, stop: np.ndarray) -> Optional[np.ndarray]:
    """Non-negative decimal integers written in ``data[start:stop]`` (vectorized); None if any is malformed."""
    length = stop - start
    if length.size == 0 or length.min() < 1 or length.max() > 18:
        return None
    value = np.zeros(start.size, dtype=np.int64)
    for k in range(int(length.max())):
        live = k < length
        digit = data[np.where(live, start + k, 0)].astype(np.int64) - ord("0")
        if np.any(live & ((digit < 0) | (digit > 9))):
            return None
        value = np.where(live, value * 10 + digit, value)
    return value


# ---------------------------------------------------------------------------------- data set + loading

@dataclass
class Dataset:
    """One recommendation data set in memory.

    ``histories[u]`` is user ``u``'s items in time order (ids ``0..num_items-1``). Optional parts:
    ``items`` (text per item, from ``.item.json``), ``codes`` (``[V, L]`` identifiers, from
    ``.index.json``), ``embeddings`` (name -> ``[V, d]`` float tensors, e.g. ``"semantic"``, ``"cf"``)
    and ``labels`` (name -> ``[V]`` long tensors; planted structure of synthetic catalogs).
    """

    name: str
    histories: list[list[int]]
    num_items: int
    items: Optional[list[dict]] = None
    codes: Optional[torch.Tensor] = None
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    folder: Optional[Path] = None

    def __post_init__(self) -> None:
        validate_histories(self.histories, self.num_items, source=f"data set {self.name!r}")
        if self.items is not None and len(self.items) != self.num_items:
            raise ValueError(f"data set {self.name!r}: {len(self.items)} item texts for {self.num_items} items")
        if self.codes is not None and (self.codes.dim() != 2 or self.codes.shape[0] != self.num_items):
            raise ValueError(f"data set {self.name!r}: codes must be [{self.num_items}, L], "
                             f"got {tuple(self.codes.shape)}")
        for kind, table in (("embeddings", self.embeddings), ("labels", self.labels)):
            for key, t in table.items():
                if t.shape[0] != self.num_items:
                    raise ValueError(f"data set {self.name!r}: {kind}[{key!r}] has {t.shape[0]} rows, "
                                     f"expected {self.num_items}")

    @property
    def num_users(self) -> int:
        return len(self.histories)

    @property
    def num_interactions(self) -> int:
        return sum(len(h) for h in self.histories)

    def paths(self, folder: Optional[PathLike] = None) -> dict[str, Path]:
        """File paths of this data set's json files in ``folder`` (default: where it was loaded from)."""
        folder = Path(folder) if folder is not None else self.folder
        if folder is None:
            raise ValueError(f"data set {self.name!r} has no folder; pass one")
        return {kind: folder / f"{self.name}.{kind}.json" for kind in ("inter", "item", "index")}

    def save(self, folder: PathLike) -> Path:
        """Write ``<Name>.inter.json`` (+ ``.item.json`` and ``.index.json`` when present) into ``folder``."""
        paths = self.paths(folder)
        write_inter_json(paths["inter"], self.histories)
        if self.items is not None:
            write_item_json(paths["item"], self.items)
        if self.codes is not None:
            write_index_json(paths["index"], self.codes)
        return Path(folder)

    def __repr__(self) -> str:
        extras = [k for k, v in (("items", self.items), ("codes", self.codes)) if v is not None]
        extras += [f"embeddings[{k}]" for k in self.embeddings] + [f"labels[{k}]" for k in self.labels]
        return (f"Dataset({self.name!r}, users={self.num_users}, items={self.num_items}, "
                f"interactions={self.num_interactions}{', ' + ', '.join(extras) if extras else ''})")


def validate_histories(histories: Sequence[Sequence[int]], num_items: int, source: str = "histories") -> None:
    """Non-empty per-user lists of item ids in ``0..num_items-1`` (checked in one vectorized pass)."""
    if num_items < 0:
        raise ValueError(f"{source}: num_items must be >= 0, got {num_items}")
    for user, row in enumerate(histories):
        if len(row) == 0:
            raise DataFormatError(f"{source}: user {user} has an empty history")
    if not histories:
        return
    flat = torch.tensor([i for row in histories for i in row], dtype=torch.long)
    bad = (flat < 0) | (flat >= num_items)
    if bool(bad.any()):
        first = int(bad.nonzero()[0])
        lengths = torch.tensor([len(r) for r in histories])
        user = int(torch.searchsorted(lengths.cumsum(0), torch.tensor(first), right=True))
        raise DataFormatError(f"{source}: user {user} has unknown item {int(flat[first])} "
                              f"(the catalog has {num_items} items, ids 0..{num_items - 1})")


def resolve_data_root(root: Optional[PathLike] = None) -> Optional[Path]:
    """The data root: ``root`` if given, else ``$LETTER_FAST_DATA``.

    Returns None when neither is set; an explicit root or environment variable that does not exist is
    an error.
    """
    if root is not None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"data root not found: {path}")
        return path
    env = os.environ.get(ENV_DATA_ROOT)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{ENV_DATA_ROOT}={env} is not a folder")
        return path
    return None


def find_dataset_folder(name_or_path: PathLike, root: Optional[PathLike] = None) -> tuple[Path, str]:
    """Locate a data set: a folder holding ``<Name>.inter.json``, that file itself, or a name under the root.

    Names match folder names and file prefixes case-insensitively (``scientific`` finds
    ``scientific/Scientific.inter.json``). Returns ``(folder, Name)``.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        if not path.name.endswith(".inter.json"):
            raise ValueError(f"{path}: expected a <Name>.inter.json file or a data set folder")
        return path.parent, path.name[: -len(".inter.json")]
    if not path.is_dir():
        data_root = resolve_data_root(root)
        candidate = None
        if data_root is not None and len(path.parts) == 1:
            matches = [p for p in data_root.iterdir() if p.is_dir() and p.name.lower() == path.name.lower()]
            candidate = matches[0] if matches else None
        if candidate is None:
            where = f"under data root {data_root}" if data_root else \
                f"(no data root: pass one or set {ENV_DATA_ROOT})"
            raise FileNotFoundError(f"data set not found: {name_or_path} is not a folder or a data set {where}")
        path = candidate
    inters = sorted(path.glob("*.inter.json"))
    if not inters:
        raise FileNotFoundError(f"no <Name>.inter.json in {path}")
    if len(inters) > 1:
        names = ", ".join(p.name for p in inters)
        raise ValueError(f"{path} holds several data sets ({names}); pass the .inter.json file you mean")
    return path, inters[0].name[: -len(".inter.json")]


def load_dataset(name_or_path: PathLike, root: Optional[PathLike] = None, *, require_text: bool = False,
                 num_items: Optional[int] = None) -> Dataset:
    """Load a data set by folder, ``.inter.json`` path, or name under the data root (see ``resolve_data_root``).

    The item count is the largest of: ``num_items`` if given, the number of ``.item.json`` / ``.index.json``
    entries when present, and ``1 + max item id`` in the interactions; the item and index files must then
    cover every item. ``require_text`` makes a missing ``.item.json`` an error.
    """
    folder, name = find_dataset_folder(name_or_path, root)
    inter_path = folder / f"{name}.inter.json"
    item_path, index_path = folder / f"{name}.item.json", folder / f"{name}.index.json"
    histories = read_inter_json(inter_path, num_items=num_items)
    items = read_item_json(item_path) if item_path.exists() else None
    if items is None and require_text:
        raise FileNotFoundError(f"item text not found: {item_path} (this data set has no .item.json)")
    codes = read_index_json(index_path) if index_path.exists() else None
    used = 1 + max((max(h) for h in histories), default=-1)
    count = num_items if num_items is not None else max(
        used, len(items) if items is not None else 0, codes.shape[0] if codes is not None else 0)
    if items is not None and len(items) != count:
        raise DataFormatError(f"{item_path}: text for {len(items)} items, but the data set has {count} items")
    if codes is not None and codes.shape[0] != count:
        raise DataFormatError(f"{index_path}: identifiers for {codes.shape[0]} items, but the data set has {count}")
    return Dataset(name=name, histories=histories, num_items=count, items=items, codes=codes, folder=folder)
