"""The item index: every item's semantic identifier (code sequence) as a prefix trie of tensors.

Generative recommenders (TIGER, Rajput et al., NeurIPS 2023; LC-Rec, Zheng et al., ICDE 2024;
LETTER, Wang et al., CIKM 2024) name each item by ``L`` codes ``(c_0, ..., c_{L-1})`` with
``c_l in [0, N_l)`` and decode identifiers code by code. Only the identifiers of real items may be
emitted, so decoding walks a prefix trie: the node of a prefix ``(c_0..c_{t-1})`` lists the codes
that continue it towards at least one item.

Layout (all plain tensors, on any device)
----------------------------------------
Nodes of level ``t`` (the distinct prefixes of length ``t``; level 0 is the root alone) are
numbered ``0..n_t - 1`` in lexicographic order of their prefixes. Because of that order, the
children of a node are contiguous among the nodes of the next level and sorted by code, which
gives a CSR layout per level with no pointers to store beyond one offset per node:

``child_ptr[t]``  int32 ``[n_t + 1]``: node ``i`` of level ``t`` has the children
                  ``child_ptr[t][i] .. child_ptr[t][i+1] - 1`` at level ``t + 1``
``child_code[t]`` int16 (int32 if some ``N_l > 32767``) ``[n_{t+1}]``: the code that leads
                  from a node's parent to it, so ``child_code[t][child_ptr[t][i]:child_ptr[t][i+1]]``
                  are node ``i``'s continuation codes, ascending

The nodes of level ``L`` are the *identifiers* (leaves), ``0..num_identifiers - 1``. Their items:

``leaf_items``    ``[V]`` item ids (int32 when they fit) ordered by identifier; without collisions
                  identifier ``i`` is item ``leaf_items[i]``
``leaf_ptr``      int32 (int64 beyond 2^31 items) ``[n_L + 1]`` only when collisions are allowed and present: identifier
                  ``i`` groups the items ``leaf_items[leaf_ptr[i]:leaf_ptr[i+1]]``, in input order;
                  its *first* item ``leaf_items[leaf_ptr[i]]`` stands for the group where one item
                  id is asked for (:meth:`lookup`, the beam search)

plus a map from item id to its position in ``leaf_items`` (a dense int32 table when ids are
dense, else sorted ids + positions) for :meth:`codes_of`. For ``V`` random 4-level identifiers
over ``N = 256`` codes this is about 14-15 bytes per item (see benchmarks/bench_trie.py).

The build is the op :func:`letter_fast.ops.trie_build` (a native radix sort on CPU; else one
vectorized sort of the identifiers and per level a comparison of neighbouring prefixes and a
``searchsorted``). No Python loop runs over items.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from letter_fast import io
from letter_fast.ops import checks
from letter_fast.ops.trie import check_codes as _check_codes
from letter_fast.ops.trie import check_range, trie_build, trie_walk

_FORMAT = "letter_fast.ItemIndex"
_VERSION = 1
_INT32_MAX = 2**31 - 1


class IdentifierCollisionError(ValueError):
    """Two or more items share one code sequence and ``allow_collisions`` is False."""


def _levels_of(num_codes, L: int, what: str = "ItemIndex") -> tuple[int, ...]:
    if isinstance(num_codes, int) and not isinstance(num_codes, bool):
        levels = (int(num_codes),) * L
    else:
        try:
            levels = tuple(int(n) for n in num_codes)
        except TypeError:
            raise TypeError(f"{what}: num_codes must be an int or a sequence of ints, "
                            f"got {type(num_codes).__name__}") from None
        if len(levels) != L:
            raise ValueError(f"{what}: num_codes has {len(levels)} entries but the codes have L={L} levels")
    if any(n < 1 for n in levels):
        raise ValueError(f"{what}: every level needs num_codes >= 1, got {list(levels)}")
    return levels


class ItemIndex:
    """A prefix trie over items' code sequences, held as tensors (see the module docstring).

    Build with :meth:`from_codes`; move with :meth:`to`; persist with :meth:`save` / :meth:`load`.

    Attributes: ``num_levels`` (L), ``num_codes`` (one int when all levels have the same size,
    else a tuple per level; ``codes_per_level`` is always the tuple), ``num_items`` (V),
    ``num_identifiers`` (distinct code sequences; < V only with collisions), ``device``,
    ``has_collisions``, ``child_ptr`` / ``child_code`` (lists of L tensors), ``leaf_items``,
    ``leaf_ptr`` (None without collisions).
    """

    def __init__(self, codes_per_level, child_ptr, child_code, leaf_items, leaf_ptr, item_table,
                 sorted_item_ids, sorted_item_pos):
        self.codes_per_level = tuple(int(n) for n in codes_per_level)
        self.child_ptr = list(child_ptr)
        self.child_code = list(child_code)
        self.leaf_items = leaf_items
        self.leaf_ptr = leaf_ptr
        # item id -> position in leaf_items: a dense table (-1 = unknown id), or sorted ids + positions
        self._item_table = item_table
        self._sorted_item_ids = sorted_item_ids
        self._sorted_item_pos = sorted_item_pos

    # ------------------------------------------------------------------ properties
    @property
    def num_levels(self) -> int:
        return len(self.codes_per_level)

    @property
    def num_codes(self) -> Union[int, tuple[int, ...]]:
        n = self.codes_per_level
        return n[0] if len(set(n)) == 1 else n

    @property
    def num_items(self) -> int:
        return int(self.leaf_items.numel())

    @property
    def num_identifiers(self) -> int:
        return int(self.child_code[-1].numel())

    def num_nodes(self, level: int) -> int:
        """Nodes at depth ``level`` (0 = root, L = identifiers)."""
        return int(self.child_ptr[level].numel() - 1) if level < self.num_levels else self.num_identifiers

    @property
    def has_collisions(self) -> bool:
        return self.leaf_ptr is not None

    @property
    def device(self) -> torch.device:
        return self.leaf_items.device

    def tensors(self) -> list[torch.Tensor]:
        out = self.child_ptr + self.child_code + [self.leaf_items]
        for t in (self.leaf_ptr, self._item_table, self._sorted_item_ids, self._sorted_item_pos):
            if t is not None:
                out.append(t)
        return out

    def nbytes(self) -> int:
        """Bytes held by the index's tensors."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def __repr__(self) -> str:
        return (f"ItemIndex(num_items={self.num_items}, num_identifiers={self.num_identifiers}, "
                f"num_levels={self.num_levels}, num_codes={self.num_codes}, device={self.device}, "
                f"nbytes={self.nbytes()})")

    # ------------------------------------------------------------------ build
    @classmethod
    def from_codes(
        cls,
        codes: torch.Tensor,
        item_ids: Optional[torch.Tensor] = None,
        num_codes: Union[int, Sequence[int], None] = None,
        allow_collisions: bool = False,
        *,
        backend: Optional[str] = None,
    ) -> ItemIndex:
        """Build the index from ``codes [V, L]`` (row ``v`` is the identifier of item ``item_ids[v]``).

        ``item_ids`` (default ``arange(V)``): distinct non-negative integers. ``num_codes``: the
        codebook size N (int) or one size per level; default ``codes.max() + 1`` over all levels.
        Identifiers shared by several items raise :class:`IdentifierCollisionError` naming the
        first ones, unless ``allow_collisions=True``: then each identifier groups its items (in
        input order) and its first item stands for it (see :meth:`items_of_identifier`).

        The index lives on ``codes``' device. ``backend`` (default ``LETTER_FAST_BACKEND``, else
        ``auto``) picks the build of :func:`letter_fast.ops.trie_build`: ``cpu`` (native radix sort
        + one scan; identifiers that pack into 63 bits) or ``reference`` (PyTorch sorts, any device).
        """
        op = "ItemIndex.from_codes"
        codes = _check_codes(codes, "codes", op)
        V, L = codes.shape
        if L == 0:
            raise ValueError(f"{op}: codes must have at least one level, got shape {tuple(codes.shape)}")
        if V == 0:
            raise ValueError(f"{op}: codes is empty (shape {tuple(codes.shape)}); an index needs at least one item")
        if num_codes is None:
            num_codes = int(codes.max()) + 1
        levels = _levels_of(num_codes, L, op)
        if max(levels) > _INT32_MAX:
            raise ValueError(f"{op}: num_codes up to {_INT32_MAX} per level are supported, got {max(levels)}")
        device = codes.device
        if item_ids is None:
            ids = None  # item v is row v
        else:
            if not isinstance(item_ids, torch.Tensor):
                raise TypeError(f"{op}: item_ids must be an integer torch.Tensor [V], got {type(item_ids).__name__}")
            if item_ids.dtype.is_floating_point or item_ids.dtype == torch.bool:
                raise TypeError(f"{op}: item_ids must be integers, got {item_ids.dtype}; cast with .long()")
            if item_ids.shape != (V,):
                raise ValueError(f"{op}: item_ids must have shape [V] = [{V}] to match codes, "
                                 f"got {tuple(item_ids.shape)}")
            if item_ids.device != device:
                raise ValueError(f"{op}: codes are on {device} but item_ids on {item_ids.device}; move them with .to()")
            ids = item_ids.long()
            if int(ids.min()) < 0:
                raise ValueError(f"{op}: item_ids must be >= 0, got {int(ids.min())} at row {int(ids.argmin())}")

        order, child_ptr, child_code, leaf_starts = trie_build(codes, levels, backend=backend)
        n_leaves = leaf_starts.numel()

        # 3. Items in identifier order, collision groups, and the id -> position map.
        leaf_ptr = None
        if n_leaves < V:
            leaf_ptr = torch.cat([leaf_starts, torch.tensor([V], device=device)])
            leaf_ptr = leaf_ptr.to(torch.int32) if V <= _INT32_MAX else leaf_ptr
            if not allow_collisions:
                cls._raise_collision(codes, torch.arange(V, device=device) if ids is None else ids, order, leaf_ptr)
        id_max = V - 1 if item_ids is None else int(ids.max())
        leaf_items = order if item_ids is None else ids[order]
        if id_max <= _INT32_MAX:
            leaf_items = leaf_items.to(torch.int32)
        del order
        positions = torch.arange(V, device=device, dtype=torch.int32)
        item_table = sorted_ids = sorted_pos = None
        if id_max < 4 * V + 1024:
            item_table = torch.full((id_max + 1,), -1, dtype=torch.int32, device=device) if item_ids is not None \
                else torch.empty(V, dtype=torch.int32, device=device)
            item_table[leaf_items] = positions
            if item_ids is not None and int((item_table >= 0).sum()) != V:
                cls._raise_duplicate_ids(ids)
        else:
            sorted_ids, perm = torch.sort(leaf_items.long())
            if V > 1 and bool((sorted_ids[1:] == sorted_ids[:-1]).any()):
                cls._raise_duplicate_ids(ids)
            sorted_pos = positions[perm]
        return cls(levels, child_ptr, child_code, leaf_items, leaf_ptr, item_table, sorted_ids, sorted_pos)

    @staticmethod
    def _raise_duplicate_ids(ids: torch.Tensor) -> None:
        s, perm = torch.sort(ids, stable=True)
        dup = int((s[1:] == s[:-1]).nonzero()[0])
        raise ValueError(f"ItemIndex.from_codes: item_ids must be distinct; id {int(s[dup])} appears at rows "
                         f"{int(perm[dup])} and {int(perm[dup + 1])}")

    @staticmethod
    def _raise_collision(codes, ids, order, leaf_ptr) -> None:
        sizes = leaf_ptr[1:] - leaf_ptr[:-1]
        groups = (sizes > 1).nonzero().squeeze(1)
        # The sort is stable, so a group's first row is its earliest; report the earliest group.
        first_rows = order[leaf_ptr[groups]]
        g = int(groups[first_rows.argmin()])
        rows = order[int(leaf_ptr[g]):int(leaf_ptr[g + 1])].tolist()
        extra = int((sizes[groups] - 1).sum())
        shown = ", ".join(f"item {int(ids[r])} (row {r})" for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        raise IdentifierCollisionError(
            f"ItemIndex.from_codes: identifier collision: {shown} share the code sequence "
            f"{tuple(codes[rows[0]].tolist())}; {len(groups)} identifier(s) are shared, {extra} item(s) in excess. "
            "Make identifiers unique (e.g. append a disambiguating level, as TIGER does) or pass "
            "allow_collisions=True to group them."
        )

    # ------------------------------------------------------------------ a living catalog
    def add_items(self, codes: torch.Tensor, item_ids: torch.Tensor, *, backend: Optional[str] = None) -> ItemIndex:
        """A new index holding this one's items plus ``item_ids [n]`` with identifiers ``codes [n, L]``.

        Rebuilt with :meth:`from_codes` (one :func:`letter_fast.ops.trie_build` over all ``V + n`` items), so
        the existing items keep their identifiers; a new id already in the index or a new identifier equal to
        an existing one raises (as :meth:`from_codes` does; collision-free new identifiers come from
        :func:`letter_fast.tokenizer.catalog.assign_new_codes`). Identifiers of retired items are not known
        here: pass codes that avoid them (the catalog's ``<Name>.index.json`` keeps them).
        """
        op = "ItemIndex.add_items"
        codes = _check_codes(codes, "codes", op, self.num_levels).to(self.device)
        if not isinstance(item_ids, torch.Tensor) or item_ids.dtype.is_floating_point or item_ids.dtype == torch.bool:
            raise TypeError(f"{op}: item_ids must be an integer torch.Tensor [n]")
        if item_ids.shape != (codes.shape[0],):
            raise ValueError(f"{op}: item_ids must have shape [{codes.shape[0]}] to match codes, "
                             f"got {tuple(item_ids.shape)}")
        item_ids = item_ids.to(self.device).long()
        check_range(codes, self.codes_per_level, "codes", op)
        if item_ids.numel():
            known = self._known(item_ids)
            if bool(known.any()):
                bad = int(known.nonzero()[0])
                raise ValueError(f"{op}: item id {int(item_ids[bad])} (row {bad}) is already in the index")
        old_codes, old_ids = self.all_codes()
        return ItemIndex.from_codes(torch.cat([old_codes, codes.long()]), torch.cat([old_ids, item_ids]),
                                    num_codes=list(self.codes_per_level), allow_collisions=self.has_collisions,
                                    backend=backend)

    def retire(self, item_ids: torch.Tensor, *, backend: Optional[str] = None) -> ItemIndex:
        """A new index without ``item_ids``: the trie no longer leads to them, so decoding never returns them.

        A prefix whose items are all retired disappears with them. Rebuilt with :meth:`from_codes`. Unknown
        ids raise; retiring every item raises (an index needs at least one item).
        """
        op = "ItemIndex.retire"
        if not isinstance(item_ids, torch.Tensor) or item_ids.dtype.is_floating_point or item_ids.dtype == torch.bool:
            raise TypeError(f"{op}: item_ids must be an integer torch.Tensor [n]")
        gone = item_ids.to(self.device).long().reshape(-1)
        self._positions_of(gone, op)   # unknown ids raise, naming the first
        codes, ids = self.all_codes()
        keep = ~torch.isin(ids, gone)
        if not bool(keep.any()):
            raise ValueError(f"{op}: retiring all {self.num_items} items would leave an empty index")
        return ItemIndex.from_codes(codes[keep], ids[keep], num_codes=list(self.codes_per_level),
                                    allow_collisions=self.has_collisions, backend=backend)

    def _known(self, ids: torch.Tensor) -> torch.Tensor:
        if self._item_table is not None:
            inside = (ids >= 0) & (ids < self._item_table.numel())
            return inside & (self._item_table[ids.clamp(0, self._item_table.numel() - 1)] >= 0)
        j = torch.searchsorted(self._sorted_item_ids, ids).clamp(max=self.num_items - 1)
        return self._sorted_item_ids[j] == ids

    # ------------------------------------------------------------------ device and files
    def to(self, device) -> ItemIndex:
        """A copy on ``device`` (self when already there)."""
        device = torch.device(device)
        if device == self.device:
            return self

        def mv(t):
            return None if t is None else t.to(device)

        return ItemIndex(self.codes_per_level, [mv(t) for t in self.child_ptr], [mv(t) for t in self.child_code],
                         mv(self.leaf_items), mv(self.leaf_ptr), mv(self._item_table),
                         mv(self._sorted_item_ids), mv(self._sorted_item_pos))

    def state_dict(self) -> dict:
        def cpu(t):
            return None if t is None else t.detach().cpu()

        return {
            "format": _FORMAT, "version": _VERSION, "codes_per_level": list(self.codes_per_level),
            "child_ptr": [cpu(t) for t in self.child_ptr], "child_code": [cpu(t) for t in self.child_code],
            "leaf_items": cpu(self.leaf_items), "leaf_ptr": cpu(self.leaf_ptr),
            "item_table": cpu(self._item_table), "sorted_item_ids": cpu(self._sorted_item_ids),
            "sorted_item_pos": cpu(self._sorted_item_pos),
        }

    def save(self, path) -> Path:
        """Write the index to ``path`` (a torch file) atomically."""
        state = self.state_dict()
        return io.save_torch(state, path)

    @classmethod
    def load(cls, path, device=None) -> ItemIndex:
        """Read an index written by :meth:`save` (onto ``device``, default CPU)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"item index file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"could not read an item index from {path}: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a letter_fast item index (written by ItemIndex.save)")
        if state.get("version") != _VERSION:
            raise ValueError(f"{path} has item index format version {state.get('version')}; "
                             f"this letter_fast reads {_VERSION}")
        index = cls(state["codes_per_level"], state["child_ptr"], state["child_code"], state["leaf_items"],
                    state["leaf_ptr"], state["item_table"], state["sorted_item_ids"], state["sorted_item_pos"])
        return index.to(device) if device is not None else index

    # ------------------------------------------------------------------ queries
    def walk(self, prefix: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
        """Trie node of each prefix: ``prefix [Q, t]`` codes -> node ids ``[Q]`` at level ``t``.

        -1 where the prefix leads to no item (or a code is out of range). ``t = 0`` gives the
        root (0); ``t = L`` gives identifier ids. The op :func:`letter_fast.ops.trie_walk`
        (``backend``: ``auto``, ``reference`` or ``cpu``).
        """
        return trie_walk(self, prefix, backend=backend)

    def identifier_of(self, codes: torch.Tensor) -> torch.Tensor:
        """Identifier id ``[Q]`` (in ``[0, num_identifiers)``) of each code sequence ``[Q, L]``; -1 if none."""
        codes = _check_codes(codes, "codes", "ItemIndex.identifier_of", self.num_levels)
        return self.walk(codes)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Item id ``[Q]`` (int64) of each code sequence ``codes [Q, L]``; -1 where no item has it.

        With collisions, the first item of the identifier's group (see :meth:`items_of_identifier`).
        """
        return self.first_item(self.identifier_of(codes))

    def first_item(self, identifier: torch.Tensor) -> torch.Tensor:
        """The item standing for each identifier id (its group's first item); -1 for -1."""
        identifier = identifier.to(self.device).long()
        ok = identifier >= 0
        pos = identifier.clamp(min=0)
        if self.leaf_ptr is not None:
            pos = self.leaf_ptr[pos].long()
        items = self.leaf_items[pos].long() if self.num_items else pos
        return torch.where(ok, items, torch.full_like(items, -1))

    def group_sizes(self, identifier: torch.Tensor) -> torch.Tensor:
        """How many items share each identifier id (0 for -1)."""
        identifier = identifier.to(self.device).long()
        ok = identifier >= 0
        if self.leaf_ptr is None:
            return ok.long()
        i = identifier.clamp(min=0)
        return torch.where(ok, (self.leaf_ptr[i + 1] - self.leaf_ptr[i]).long(), torch.zeros_like(i))

    def items_of_identifier(self, identifier: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All items of each identifier id ``[Q]`` as CSR: ``(items [total], offsets [Q + 1])``.

        The items of query ``q`` are ``items[offsets[q]:offsets[q+1]]`` in input order (the first
        is the one :meth:`lookup` and the beam search return); an id of -1 has none.
        """
        identifier = identifier.to(self.device).long().reshape(-1)
        sizes = self.group_sizes(identifier)
        offsets = torch.zeros(identifier.numel() + 1, dtype=torch.long, device=self.device)
        torch.cumsum(sizes, 0, out=offsets[1:])
        start = self.leaf_ptr[identifier.clamp(min=0)].long() if self.leaf_ptr is not None else identifier.clamp(min=0)
        owner = torch.repeat_interleave(torch.arange(identifier.numel(), device=self.device), sizes)
        pos = start[owner] + torch.arange(owner.numel(), device=self.device) - offsets[owner]
        return self.leaf_items[pos].long(), offsets

    def _positions_of(self, item_ids: torch.Tensor, op: str) -> torch.Tensor:
        if not isinstance(item_ids, torch.Tensor) or item_ids.dtype.is_floating_point or item_ids.dtype == torch.bool:
            raise TypeError(f"{op}: item_ids must be an integer torch.Tensor [Q]")
        ids = item_ids.to(self.device).long().reshape(-1)
        if self._item_table is not None:
            known = (ids >= 0) & (ids < self._item_table.numel())
            pos = torch.where(known, self._item_table[ids.clamp(0, self._item_table.numel() - 1)].long(),
                              torch.full_like(ids, -1))
        else:
            j = torch.searchsorted(self._sorted_item_ids, ids).clamp(max=self.num_items - 1)
            known = self._sorted_item_ids[j] == ids
            pos = torch.where(known, self._sorted_item_pos[j].long(), torch.full_like(ids, -1))
        if ids.numel() and bool((pos < 0).any()):
            bad = int((pos < 0).nonzero()[0])
            raise ValueError(f"{op}: item id {int(ids[bad])} (position {bad}) is not in the index "
                             f"({self.num_items} items)")
        return pos

    def identifier_of_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Identifier id ``[Q]`` of each item id (raises on ids not in the index)."""
        pos = self._positions_of(item_ids, "ItemIndex.identifier_of_items")
        if self.leaf_ptr is None:
            return pos
        return torch.searchsorted(self.leaf_ptr, pos.to(self.leaf_ptr.dtype), right=True).long() - 1

    def codes_of_identifier(self, identifier: torch.Tensor) -> torch.Tensor:
        """Code sequences ``[Q, L]`` of identifier ids ``[Q]`` (all >= 0)."""
        node = identifier.to(self.device).long().reshape(-1)
        if not checks.index_range(node, self.num_identifiers):
            raise ValueError(f"codes_of_identifier: identifier ids must lie in [0, {self.num_identifiers})")
        out = torch.empty(node.numel(), self.num_levels, dtype=torch.long, device=self.device)
        for t in reversed(range(self.num_levels)):
            out[:, t] = self.child_code[t][node].long()
            # the parent is the node whose child range holds this node
            node = torch.searchsorted(self.child_ptr[t], node.to(torch.int32), right=True).long() - 1
        return out

    def codes_of(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Code sequence ``[Q, L]`` (int64) of each item id ``[Q]``; raises on unknown ids."""
        return self.codes_of_identifier(self.identifier_of_items(item_ids))

    def all_codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(codes [V, L], item_ids [V])`` of every item, in identifier order."""
        ident = torch.arange(self.num_identifiers, device=self.device)
        if self.leaf_ptr is not None:
            ident = torch.repeat_interleave(ident, (self.leaf_ptr[1:] - self.leaf_ptr[:-1]).long())
        return self.codes_of_identifier(ident), self.leaf_items.long()
