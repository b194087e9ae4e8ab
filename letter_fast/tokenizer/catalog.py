"""A living catalog: identifiers for new items that collide with no existing one, existing ones never changed.

``assign_new_codes`` takes the current identifiers ``existing [V, L']`` (``L' = L + E``: the tokenizer's ``L``
levels plus the ``E >= 0`` extra levels of :mod:`letter_fast.tokenizer.assign`), the new items' nearest codes
``new [n, L]`` and their residuals before the last level, and the last codebook. Per new item:

* its *prefix* is its first ``L - 1`` codes (the tokenizer's choice, never changed);
* a *slot* of its prefix group is a pair (last-level code ``c``, extra digits ``x in [0, N)^E``); the slots of
  code ``c`` are ranked by ``x`` read in base N (``x = 0`` first), so every code holds ``N^E`` slots
  (``E = 0``: one) and every extra level stays a vocabulary of N codes, as in assign.py;
* a slot is free when no existing item and no new item placed before holds it.

An item whose nearest identifier is free and that no other new item nearer to it wants keeps it, so without
collisions this is plain nearest-code encoding. The others are placed one after the other, nearest first (cost
of the item's last residual to its nearest last-level code, ties by item id; assign.py's greedy order, not an
optimal matching): each takes the nearest *free last-level code* (slot ``x = 0``; squared distance
``||r||^2 - 2 r.e + ||e||^2``, assign.py's expression); when every last-level code of the group is taken at
``x = 0`` and the index has extra levels (``E >= 1``), the lowest free slot of the nearest code that has one
(the extra-level rule of assign.py: never more than N codes per level).

**No level is ever added**: when every slot of a prefix group is taken (``N`` codes with ``E = 0``, ``N^(E+1)``
with ``E`` extra levels), the item cannot be placed without changing the existing identifiers' length, and
:class:`PrefixGroupFullError` ("prefix group full") names the prefix; re-tokenize the catalog then.

Cost: existing identifiers are packed into sorted int64 keys (radix N per level, ``L' log2 N <= 62`` bits) once;
the items that move are placed by a loop over them (each step one ``[N]`` numpy pass), the others vectorized.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from letter_fast.io import PathLike, atomic_write, save_tensor
from letter_fast.tokenizer.assign import _last_level_costs

META_FORMAT, META_VERSION = "letter_fast.index_meta", 1


class PrefixGroupFullError(ValueError):
    """Every slot of a new item's prefix group is taken and the index has no extra level to extend."""


def _pack(codes: np.ndarray, N: int) -> np.ndarray:
    key = np.zeros(codes.shape[0], dtype=np.int64)
    for level in range(codes.shape[1]):
        key = key * N + codes[:, level]
    return key


def assign_new_codes(existing, new_codes, new_last_residuals, last_codebook, *, num_levels: int,
                     item_ids=None, return_stats: bool = False):
    """Identifiers ``[n, L']`` (int64 numpy) for new items, distinct from ``existing [V, L']`` and from each other.

    ``new_codes [n, num_levels]``: the tokenizer's nearest codes; ``new_last_residuals [n, d]``: the residual the
    last level quantizes; ``last_codebook [N, d]``. ``item_ids`` (default ``V .. V + n - 1``) only break ties and
    name items in errors. See the module docstring for the rule; raises :class:`PrefixGroupFullError`.
    With ``return_stats``: also ``{"kept": ..., "moved": ..., "extra_slots": ...}``.
    """
    existing = np.asarray(existing.numpy() if isinstance(existing, torch.Tensor) else existing, dtype=np.int64)
    new = np.asarray(new_codes.numpy() if isinstance(new_codes, torch.Tensor) else new_codes, dtype=np.int64)
    if isinstance(last_codebook, torch.Tensor):
        last_codebook = last_codebook.detach().cpu().float().numpy()
    codebook = np.asarray(last_codebook, dtype=np.float32)
    N, L = codebook.shape[0], int(num_levels)
    V, width = existing.shape
    n = new.shape[0]
    E = width - L
    if E < 0 or new.shape[1] != L:
        raise ValueError(f"assign_new_codes: existing identifiers have {width} levels, new codes {new.shape[1]}; "
                         f"the tokenizer has {L} (existing identifiers may carry extra levels, never fewer)")
    if width * np.log2(max(N, 2)) > 62:
        raise ValueError(f"assign_new_codes: {width} levels of {N} codes do not pack into 63 bits")
    ids = np.arange(V, V + n) if item_ids is None else np.asarray(item_ids, dtype=np.int64)
    out = np.concatenate([new, np.zeros((n, E), dtype=np.int64)], axis=1)
    taken = np.sort(_pack(existing, N))
    stats = {"kept": n, "moved": 0, "extra_slots": 0}
    if n == 0:
        return (out, stats) if return_stats else out
    residuals = np.asarray(new_last_residuals, dtype=np.float32)
    own = ((residuals - codebook[new[:, L - 1]]) ** 2).sum(1)
    key = _pack(out, N)
    # nearest first (ties: item id): the first new item on a free identifier keeps it
    order = np.lexsort((ids, own))
    k_sorted = key[order]
    by_key = np.argsort(k_sorted, kind="stable")
    dup = np.zeros(n, dtype=bool)
    ks = k_sorted[by_key]
    dup[by_key[1:]] = ks[1:] == ks[:-1]
    if taken.size:
        hit = np.minimum(np.searchsorted(taken, k_sorted), taken.size - 1)
        on_existing = taken[hit] == k_sorted
    else:
        on_existing = np.zeros(n, dtype=bool)
    keep = ~dup & ~on_existing
    movers = order[~keep]
    stats["kept"], stats["moved"] = int(keep.sum()), int(movers.size)
    if not movers.size:
        return (out, stats) if return_stats else out
    span = N ** E                                             # slots per last-level code
    group = N * span                                          # slots per prefix group
    placed: dict[int, list[int]] = {}                         # prefix key -> slot keys new items hold
    for k in k_sorted[keep].tolist():
        placed.setdefault(k // group, []).append(k)
    costs = _last_level_costs(residuals[movers], codebook)
    for row, item in enumerate(movers.tolist()):
        prefix_key = int(key[item]) // group
        base = (prefix_key * N + np.arange(N, dtype=np.int64)) * span       # first slot of each code
        lo = np.searchsorted(taken, base)
        hi = np.searchsorted(taken, base + span)
        used = hi - lo
        mine = np.asarray(placed.get(prefix_key, []), dtype=np.int64)
        if mine.size:
            used = used + np.bincount((mine - prefix_key * group) // span, minlength=N)
        room = used < span
        if not room.any():
            prefix = tuple(new[item, : L - 1].tolist())
            raise PrefixGroupFullError(
                f"prefix group full: new item {int(ids[item])} has the prefix {prefix}, whose {group} "
                f"identifiers ({N} last-level codes" + (f" x {span} extra-level slots" if E else "") + ") are all "
                "taken, and the index has no extra level to extend (adding one would change existing "
                "identifiers); re-tokenize the catalog with `letter-fast tokenize`")
        # slot 0 of each code (extra digits 0): free unless an existing or placed item holds it
        free0 = (lo >= taken.size) | (taken[np.minimum(lo, max(taken.size - 1, 0))] != base) if taken.size \
            else np.ones(N, dtype=bool)
        if mine.size:
            free0 &= ~np.isin(base, mine)
        if free0.any():   # a free last-level code: the nearest one
            c = int(np.argmin(np.where(free0, costs[row], np.inf)))
            start, slot = int(base[c]), 0
        else:             # the last level is full: the nearest code with room on the extra levels
            c = int(np.argmin(np.where(room, costs[row], np.inf)))
            start = int(base[c])
            held = np.union1d(taken[lo[c]:hi[c]], mine[(mine >= start) & (mine < start + span)])
            # the lowest free slot: the first gap in the held keys counted from the code's first slot
            gap = np.flatnonzero(held - start != np.arange(held.size))
            slot = int(gap[0]) if gap.size else int(held.size)
        stats["extra_slots"] += int(slot > 0)
        out[item, L - 1] = c
        digits = slot
        for level in range(width - 1, L - 1, -1):
            out[item, level] = digits % N
            digits //= N
        placed.setdefault(prefix_key, []).append(start + slot)
    return (out, stats) if return_stats else out


def meta_path(index_path: PathLike) -> Path:
    """``<Name>.index.meta.json`` next to ``<Name>.index.json``."""
    index_path = Path(index_path)
    return index_path.with_name(index_path.name[: -len(".json")] + ".meta.json")


def read_index_meta(index_path: PathLike) -> Optional[dict]:
    """The sidecar of an index (None when there is none: an index straight from ``letter-fast tokenize``)."""
    path = meta_path(index_path)
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"could not read the index sidecar {path}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise ValueError(f"{path} is not a letter_fast index sidecar (format {META_FORMAT!r})")
    return meta


def _tokenizer_file(path: PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.exists():
        raise FileNotFoundError(f"tokenizer not found: {path} (give a `letter-fast tokenize` out-dir or its best.pt)")
    return path


def _new_item_ids(item_ids, V: int, n: int) -> np.ndarray:
    """Ids of the new items: ``V .. V + n - 1`` in some order (the index json keys items 0..V+n-1 contiguously)."""
    if item_ids is None:
        return np.arange(V, V + n, dtype=np.int64)
    ids = np.asarray(item_ids).reshape(-1)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"new item ids must be integers, got {ids.dtype}")
    ids = ids.astype(np.int64)
    if ids.size != n:
        raise ValueError(f"{ids.size} new item ids for {n} embedding rows")
    old = np.flatnonzero(ids < V)
    if old.size:
        raise ValueError(f"new item id {int(ids[old[0]])} (row {int(old[0])}) already exists in the index "
                         f"(items 0..{V - 1}); new items take ids {V}..{V + n - 1}")
    _, first = np.unique(ids, return_index=True)
    if first.size != n:
        rows = np.setdiff1d(np.arange(n), first)
        dup = int(ids[rows[0]])
        raise ValueError(f"new item id {dup} appears twice (rows {int(np.flatnonzero(ids == dup)[0])} and "
                         f"{int(rows[0])})")
    far = np.flatnonzero(ids >= V + n)
    if far.size:
        raise ValueError(f"new item id {int(ids[far[0]])} (row {int(far[0])}) leaves a gap: the index keys items "
                         f"0..{V + n - 1} contiguously, so {n} new items take ids {V}..{V + n - 1}")
    return ids


def add_items(tokenizer, index_path: PathLike, embeddings, out_dir: Optional[PathLike] = None, *,
              item_ids=None, device: str = "cpu", chunk_rows: int = 65536) -> dict:
    """Give new items identifiers and write the grown index; returns a summary.

    ``tokenizer``: a ``letter-fast tokenize`` out-dir or its ``best.pt`` (or a loaded :class:`LetterTokenizer`);
    ``index_path``: the current ``<Name>.index.json`` (or ``.codes.npy``); ``embeddings``: the new items'
    ``[n, D]`` embeddings (a ``.npy`` path, array or tensor), row ``i`` = item ``item_ids[i]`` (default
    ``V + i``). Writes into ``out_dir`` (default: the index's folder, i.e. in place) ``<Name>.index.json``
    (LC-Rec/LETTER layout, items ``0..V+n-1``), ``<Name>.codes.pt`` / ``.codes.npy`` and, last, the sidecar
    ``<Name>.index.meta.json`` (``version``: 1 + the input's, 0 for an index without one). Everything is checked
    before anything is written, and each file is written atomically.
    """
    from letter_fast.data.formats import read_codes
    from letter_fast.tokenizer.model import LetterTokenizer
    from letter_fast.tokenizer.stream import check_embeddings, encode_all, open_embeddings
    from letter_fast.tokenizer.train import load_tokenizer

    source = None
    if not isinstance(tokenizer, LetterTokenizer):
        source = _tokenizer_file(tokenizer)
        tokenizer = load_tokenizer(source, device)
    model = tokenizer
    L, N = model.num_levels, model.codebook_size
    index_path = Path(index_path)
    suffix = ".index.json" if index_path.name.endswith(".index.json") else ".codes.npy"
    if not index_path.name.endswith(suffix):
        raise ValueError(f"{index_path}: expected a <Name>.index.json or <Name>.codes.npy")
    name = index_path.name[: -len(suffix)]
    json_path = index_path.with_name(name + ".index.json")
    existing = read_codes(index_path, num_levels=L, codebook_size=N)
    V = existing.shape[0]
    meta = read_index_meta(json_path)
    if isinstance(embeddings, (str, Path)):
        embeddings = open_embeddings(embeddings, dim=model.input_dim, what="new item embeddings")
    else:
        check_embeddings(embeddings, dim=model.input_dim, what="new item embeddings")
    n = int(embeddings.shape[0])
    if n == 0:
        raise ValueError("no new items: the embeddings have 0 rows")
    ids = _new_item_ids(item_ids, V, n)
    new, residuals = encode_all(model, embeddings, chunk_rows=chunk_rows)
    codes, stats = assign_new_codes(existing, new, residuals, model.codebooks[L - 1].detach().cpu(),
                                    num_levels=L, item_ids=ids, return_stats=True)
    grown = np.empty((V + n, existing.shape[1]), dtype=np.int64)
    grown[:V] = existing.numpy()
    grown[ids] = codes
    grown = torch.from_numpy(grown)
    version = (int(meta["version"]) if meta else 0) + 1
    out_dir = Path(out_dir) if out_dir is not None else json_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    from letter_fast.data.formats import write_index_json

    written = [write_index_json(out_dir / f"{name}.index.json", grown),
               save_tensor(grown, out_dir / f"{name}.codes.pt"), save_tensor(grown, out_dir / f"{name}.codes.npy")]
    history = list(meta.get("history", [])) if meta else []
    history.append({"version": version, "added": n, "first_new_id": V, "kept_nearest": stats["kept"],
                    "moved": stats["moved"]})
    record = {"format": META_FORMAT, "format_version": META_VERSION, "version": version, "num_items": V + n,
              "num_levels": int(grown.shape[1]), "tokenizer_levels": L, "codebook_size": N,
              "tokenizer": str(source) if source else None, "history": history}
    written.append(atomic_write(meta_path(out_dir / f"{name}.index.json"),
                                lambda tmp: tmp.write_text(json.dumps(record, indent=1))))
    return {"name": name, "version": version, "previous_items": V, "added": n, "num_items": V + n,
            "kept_nearest": stats["kept"], "moved": stats["moved"], "extra_level_slots": stats["extra_slots"],
            "files": [str(p) for p in written]}


__all__ = ["META_FORMAT", "PrefixGroupFullError", "add_items", "assign_new_codes", "meta_path", "read_index_meta"]
