"""ItemIndex: build, lookups, codes_of, walks, collisions, save/load and bad input."""

import pytest
import torch

from letter_fast.genrec import IdentifierCollisionError, ItemIndex
from tests.conftest import NATIVE
from tests.genrec.helpers import random_catalog


def dict_trie(codes):
    prefixes = {}
    for row in codes.tolist():
        for t in range(len(row) + 1):
            prefixes.setdefault(tuple(row[:t]), set())
            if t < len(row):
                prefixes[tuple(row[:t])].add(row[t])
    return prefixes


@pytest.mark.parametrize("V,L,N", [(1, 1, 1), (1, 4, 256), (7, 1, 10), (500, 3, 8), (3000, 4, 256), (2000, 2, 300)])
def test_lookup_and_codes_of_roundtrip(V, L, N):
    codes = random_catalog(V, L, N, seed=V + L)
    index = ItemIndex.from_codes(codes, num_codes=N)
    V = codes.shape[0]
    assert index.num_items == V and index.num_identifiers == V and index.num_levels == L and index.num_codes == N
    assert torch.equal(index.lookup(codes), torch.arange(V))
    perm = torch.randperm(V)
    assert torch.equal(index.codes_of(perm), codes[perm])
    assert not index.has_collisions
    all_codes, ids = index.all_codes()
    assert torch.equal(codes[ids], all_codes)


def test_trie_structure_matches_dict_trie():
    codes = random_catalog(400, 3, [5, 9, 4], seed=3)
    index = ItemIndex.from_codes(codes, num_codes=[5, 9, 4])
    assert index.codes_per_level == (5, 9, 4) and index.num_codes == (5, 9, 4)
    trie = dict_trie(codes)
    for t in range(4):
        prefixes = sorted(p for p in trie if len(p) == t)
        assert index.num_nodes(t) == len(prefixes)
        nodes = index.walk(torch.tensor(prefixes, dtype=torch.long).reshape(len(prefixes), t), backend="reference")
        assert torch.equal(nodes, torch.arange(len(prefixes))), "nodes are numbered in lexicographic order"
        if t < 3:
            for i, p in enumerate(prefixes):
                lo, hi = int(index.child_ptr[t][i]), int(index.child_ptr[t][i + 1])
                assert index.child_code[t][lo:hi].tolist() == sorted(trie[p])


@pytest.mark.parametrize("backend", ["reference"] + (["cpu"] if NATIVE else []))
def test_walk_absent_prefixes(backend):
    codes = random_catalog(300, 3, 6, seed=1)
    index = ItemIndex.from_codes(codes, num_codes=6)
    trie = dict_trie(codes)
    g = torch.Generator().manual_seed(0)
    for t in range(4):
        probe = torch.randint(0, 7, (500, t), generator=g)  # 6 is out of range: never found
        got = index.walk(probe, backend=backend)
        expected = [tuple(r) in trie for r in probe.tolist()]
        assert ((got >= 0).tolist()) == expected
        ref = index.walk(probe, backend="reference")
        assert torch.equal(got, ref)
    assert torch.equal(index.lookup(torch.tensor([[6, 0, 0], [-1, 0, 0]])), torch.tensor([-1, -1]))


def test_item_ids_dense_and_sparse():
    codes = random_catalog(1000, 3, 16, seed=2)
    V = codes.shape[0]
    for ids in (torch.randperm(V) + 5, torch.randperm(V) * 1_000_003 + 7):
        index = ItemIndex.from_codes(codes, item_ids=ids, num_codes=16)
        assert torch.equal(index.lookup(codes), ids)
        assert torch.equal(index.codes_of(ids.flip(0)), codes.flip(0))
        with pytest.raises(ValueError, match="not in the index"):
            index.codes_of(torch.tensor([3]))


def test_unpackable_levels_use_lexicographic_sort():
    # prod(N) = 2^80 does not fit one int64 key
    codes = random_catalog(2000, 4, 1 << 20, seed=4)
    codes[:50, :3] = 7  # shared prefixes
    codes = torch.unique(codes, dim=0)
    index = ItemIndex.from_codes(codes, num_codes=1 << 20)
    assert index.child_code[0].dtype == torch.int32
    assert torch.equal(index.lookup(codes), torch.arange(codes.shape[0]))
    assert torch.equal(index.codes_of(torch.arange(codes.shape[0])), codes)


def test_collisions_raise_with_names():
    codes = torch.tensor([[0, 1], [1, 1], [2, 0], [1, 1], [0, 1], [1, 1]])
    with pytest.raises(IdentifierCollisionError,
                       match=r"item 0 \(row 0\), item 4 \(row 4\) share the code sequence \(0, 1\)"):
        ItemIndex.from_codes(codes, num_codes=3)
    with pytest.raises(IdentifierCollisionError, match="2 identifier\\(s\\) are shared, 3 item\\(s\\) in excess"):
        ItemIndex.from_codes(codes, num_codes=3)


def test_collisions_grouped():
    codes = torch.tensor([[0, 1], [1, 1], [2, 0], [1, 1], [0, 1], [1, 1]])
    ids = torch.tensor([10, 11, 12, 13, 14, 15])
    index = ItemIndex.from_codes(codes, item_ids=ids, num_codes=3, allow_collisions=True)
    assert index.has_collisions and index.num_items == 6 and index.num_identifiers == 3
    assert index.lookup(torch.tensor([[1, 1], [0, 1], [2, 0], [2, 1]])).tolist() == [11, 10, 12, -1]
    ident = index.identifier_of(torch.tensor([[1, 1], [0, 1], [2, 2]]))
    items, offsets = index.items_of_identifier(ident)
    assert offsets.tolist() == [0, 3, 5, 5]
    assert items.tolist() == [11, 13, 15, 10, 14]
    assert index.group_sizes(ident).tolist() == [3, 2, 0]
    assert torch.equal(index.codes_of(ids), codes)
    assert index.identifier_of_items(torch.tensor([15, 12])).tolist() == [1, 2]


def test_save_load_roundtrip(tmp_path):
    codes = torch.tensor([[0, 1], [1, 1], [2, 0], [1, 1]])
    index = ItemIndex.from_codes(codes, item_ids=torch.tensor([5, 6, 7, 8]), num_codes=[3, 2], allow_collisions=True)
    path = index.save(tmp_path / "sub" / "index.pt")
    loaded = ItemIndex.load(path)
    assert loaded.codes_per_level == (3, 2)
    for a, b in zip(index.tensors(), loaded.tensors()):
        assert torch.equal(a, b) and a.dtype == b.dtype
    assert loaded.lookup(codes).tolist() == [5, 6, 7, 6]
    assert list(tmp_path.joinpath("sub").iterdir()) == [path], "no temporary file left behind"
    with pytest.raises(FileNotFoundError, match="item index file not found"):
        ItemIndex.load(tmp_path / "missing.pt")
    torch.save({"a": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a letter_fast item index"):
        ItemIndex.load(tmp_path / "other.pt")


def test_to_same_device_and_memory_is_compact():
    # dense like a real catalog (most short prefixes shared); the V = 1e7 budget is benchmarked
    codes = random_catalog(40000, 4, 16, seed=5)
    index = ItemIndex.from_codes(codes, num_codes=16)
    assert index.to("cpu") is index
    assert index.child_code[0].dtype == torch.int16 and index.child_ptr[0].dtype == torch.int32
    assert index.nbytes() / index.num_items < 16


@pytest.mark.parametrize("bad,match", [
    (lambda: ItemIndex.from_codes(torch.zeros(0, 3, dtype=torch.long), num_codes=4), "empty"),
    (lambda: ItemIndex.from_codes(torch.zeros(4), num_codes=4), r"shape \[count, L\]"),
    (lambda: ItemIndex.from_codes(torch.zeros(4, 0, dtype=torch.long), num_codes=4), "at least one level"),
    (lambda: ItemIndex.from_codes(torch.zeros(4, 2), num_codes=4), "integer codes"),
    (lambda: ItemIndex.from_codes(torch.tensor([[0, 1], [4, 0]]), num_codes=4), r"codes\[1, 0\] = 4 is out of range"),
    (lambda: ItemIndex.from_codes(torch.tensor([[0, -1]]), num_codes=4), r"codes\[0, 1\] = -1 is out of range"),
    (lambda: ItemIndex.from_codes(torch.tensor([[0, 1]]), num_codes=[4, 4, 4]), "3 entries but the codes have L=2"),
    (lambda: ItemIndex.from_codes(torch.tensor([[0, 1]]), num_codes=0), "num_codes >= 1"),
    (lambda: ItemIndex.from_codes(torch.tensor([[0, 1], [1, 1]]), item_ids=torch.tensor([3, 3]), num_codes=2),
     "distinct"),
    (lambda: ItemIndex.from_codes(torch.tensor([[0, 1], [1, 1]]), item_ids=torch.tensor([1]), num_codes=2), "shape"),
    (lambda: ItemIndex.from_codes(torch.tensor([[0, 1], [1, 1]]), item_ids=torch.tensor([-1, 2]), num_codes=2), ">= 0"),
    (lambda: ItemIndex.from_codes([[0, 1]], num_codes=2), "torch.Tensor"),
    (lambda: ItemIndex.from_codes(torch.tensor([[0, 1]]), num_codes=2).lookup(torch.tensor([[0, 1, 1]])), "L=2"),
])
def test_bad_input(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        bad()


@pytest.mark.skipif(not NATIVE, reason="letter_fast._C is not built")
@pytest.mark.parametrize("V,L,N,collide", [(1, 1, 1, False), (5000, 4, 16, True), (3000, 3, [300, 2, 7], False),
                                           (800, 2, 40000, True)])
def test_native_build_equals_torch_build(V, L, N, collide):
    codes = random_catalog(V, L, N, seed=V, unique=not collide)
    ids = torch.randperm(codes.shape[0]) * 7
    levels = N if isinstance(N, list) else N
    a = ItemIndex.from_codes(codes, item_ids=ids, num_codes=levels, allow_collisions=collide, backend="cpu")
    b = ItemIndex.from_codes(codes, item_ids=ids, num_codes=levels, allow_collisions=collide, backend="reference")
    assert len(a.tensors()) == len(b.tensors())
    for x, y in zip(a.tensors(), b.tensors()):
        assert x.dtype == y.dtype and torch.equal(x, y)
    bad = torch.zeros(2, L, dtype=torch.long)
    n0 = levels[0] if isinstance(levels, list) else levels
    bad[1, 0] = n0
    with pytest.raises(ValueError, match=rf"codes\[1, 0\] = {n0} is out of range"):
        ItemIndex.from_codes(bad, num_codes=levels, backend="cpu")
