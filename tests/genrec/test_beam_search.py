"""constrained_beam_search: validity (property), exactness against brute force, padding, collisions, errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from letter_fast.genrec import ItemIndex, constrained_beam_search
from tests.conftest import CPU_BACKENDS
from tests.genrec.helpers import TableScorer, random_catalog

# The trie step kernel inside the search; the Triton interpreter is too slow for whole searches at
# these beam widths, it gets the small search below (and every step shape in tests/ops/test_trie.py).
SEARCH_BACKENDS = [b for b in CPU_BACKENDS if b != "triton"]


def brute_force_topk(scorer, codes, ids, k):
    """Exact top-k items per query by summed log-prob (ties to the lexicographically smaller identifier)."""
    scores = scorer.item_scores(codes)                     # [Q, V]
    lex = torch.argsort(scorer.prefix_value(codes))         # identifier order
    s, order = torch.sort(scores[:, lex], dim=1, descending=True, stable=True)
    return ids[lex][order[:, :k]], s[:, :k]


def assert_exact(scorer, codes, ids, items, scores):
    """Scores equal the brute-force top-k exactly; each item carries its own score; items are
    the brute-force ones up to the order among equal scores (ties are broken by beam rank)."""
    k = items.shape[1]
    exp_items, exp_scores = brute_force_topk(scorer, codes, ids, k)
    assert torch.equal(scores, exp_scores), "scores differ from the brute-force top-k"
    all_scores = scorer.item_scores(codes)
    pos = {int(i): p for p, i in enumerate(ids.tolist())}
    for q in range(items.shape[0]):
        own = torch.stack([all_scores[q, pos[int(i)]] for i in items[q]])
        assert torch.equal(own, scores[q]), "an item's returned score is not its summed log-prob"
        for value in torch.unique(scores[q]):
            tied, exp_tied = items[q][scores[q] == value], exp_items[q][exp_scores[q] == value]
            assert sorted(tied.tolist()) == sorted(exp_tied.tolist())
    return exp_items


@pytest.mark.parametrize("backend", SEARCH_BACKENDS)
@pytest.mark.parametrize("V,L,N,extra", [(1, 1, 1, 0), (6, 1, 9, 1), (40, 2, 7, 0), (150, 3, 6, 5),
                                         (60, 4, [2, 5, 3, 4], 0)])
def test_exact_with_num_beams_at_least_V(backend, V, L, N, extra):
    codes = random_catalog(V, L, N, seed=V)
    V = codes.shape[0]
    levels = [N] * L if isinstance(N, int) else N
    ids = torch.randperm(V) * 3 + 1
    index = ItemIndex.from_codes(codes, item_ids=ids, num_codes=levels)
    Q = 3
    scorer = TableScorer(Q, levels, seed=V)
    items, scores = constrained_beam_search(scorer, Q, V + extra, index, num_return=V, backend=backend)
    exp_items = assert_exact(scorer, codes, ids, items, scores)
    assert torch.equal(items, exp_items), "no ties here: the order is unique"


@pytest.mark.parametrize("backend", SEARCH_BACKENDS)
def test_ties_exact(backend):
    codes = random_catalog(200, 3, 5, seed=11)
    V = codes.shape[0]
    index = ItemIndex.from_codes(codes, num_codes=5)
    scorer = TableScorer(2, [5, 5, 5], seed=2, ties=True)
    items, scores = constrained_beam_search(scorer, 2, V, index, backend=backend)
    assert_exact(scorer, codes, torch.arange(V), items, scores)
    assert len(torch.unique(scores[0])) < V, "the test needs tied scores"


@settings(max_examples=25, deadline=None)
@given(V=st.integers(1, 120), L=st.integers(1, 4), N=st.integers(1, 9), Q=st.integers(0, 4),
       K=st.integers(1, 12), seed=st.integers(0, 10_000), inf_share=st.sampled_from([0.0, 0.3]))
def test_every_result_is_a_distinct_item(V, L, N, Q, K, seed, inf_share):
    codes = random_catalog(V, L, N, seed=seed)
    index = ItemIndex.from_codes(codes, num_codes=N)
    g = torch.Generator().manual_seed(seed)

    def step(prefix, parent):
        lp = torch.log_softmax(torch.randn(prefix.shape[0], N, generator=g), -1)
        return lp.masked_fill(torch.rand(lp.shape, generator=g) < inf_share, float("-inf"))

    items, scores = constrained_beam_search(step, Q, K, index, backend="reference")
    assert items.shape == (Q, K) and scores.shape == (Q, K) and scores.dtype == torch.float32
    valid = items >= 0
    assert torch.equal(valid, scores > float("-inf"))
    known = set(range(codes.shape[0]))
    for q in range(Q):
        row = items[q][valid[q]].tolist()
        assert set(row) <= known and len(set(row)) == len(row)
        assert valid[q].tolist() == sorted(valid[q].tolist(), reverse=True), "padding comes last"
        s = scores[q][valid[q]]
        assert torch.all(s[:-1] >= s[1:])
    if inf_share == 0.0 and Q:
        assert torch.all(valid.sum(1) == min(K, codes.shape[0])), "every reachable item fills a slot"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backends_agree_on_a_search(backend):
    Q, K = (2, 3) if backend == "triton" else (5, 10)
    codes = random_catalog(3000, 4, 12, seed=8)
    index = ItemIndex.from_codes(codes, num_codes=12)
    scorer_ref, scorer = TableScorer(Q, [12] * 4, seed=1), TableScorer(Q, [12] * 4, seed=1)
    ref = constrained_beam_search(scorer_ref, Q, K, index, num_return=K - 2, backend="reference")
    got = constrained_beam_search(scorer, Q, K, index, num_return=K - 2, backend=backend)
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])
    assert ref[0].shape == (Q, K - 2)


def test_bfloat16_log_probs():
    codes = random_catalog(100, 2, 10, seed=9)
    index = ItemIndex.from_codes(codes, num_codes=10)
    scorer = TableScorer(2, [10, 10], seed=3, dtype=torch.bfloat16)
    items, scores = constrained_beam_search(scorer, 2, codes.shape[0], index)
    assert_exact(scorer, codes, torch.arange(codes.shape[0]), items, scores)


def test_collisions_return_each_identifier_once():
    codes = torch.tensor([[0, 1], [1, 1], [2, 0], [1, 1], [0, 1]])
    index = ItemIndex.from_codes(codes, num_codes=3, allow_collisions=True)
    scorer = TableScorer(2, [3, 3], seed=4)
    items, scores, ident = constrained_beam_search(scorer, 2, 5, index, return_identifiers=True)
    for q in range(2):
        valid = items[q] >= 0
        assert sorted(items[q][valid].tolist()) == [0, 1, 2], "groups come back as their first items"
        assert (ident[q][valid] >= 0).all() and (ident[q][~valid] == -1).all()
    grouped, offsets = index.items_of_identifier(ident[0])
    assert sorted(grouped.tolist()) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_beams=0), "num_beams must be an int >= 1"),
    (dict(num_return=5), r"num_return must be an int in \[1, num_beams=4\]"),
    (dict(batch_size=-1), "batch_size"),
    (dict(width=5), r"expected \[rows, N_t\] = \[2, 4\]"),
    (dict(nan=True), "NaN"),
    (dict(index="not an index"), "ItemIndex"),
])
def test_bad_input(kwargs, match):
    codes = random_catalog(30, 2, 4, seed=0)
    index = kwargs.pop("index", ItemIndex.from_codes(codes, num_codes=4))
    width = kwargs.pop("width", 4)
    nan = kwargs.pop("nan", False)

    def step(prefix, parent):
        out = torch.zeros(prefix.shape[0], width)
        return out.fill_(float("nan")) if nan else out

    args = dict(batch_size=2, num_beams=4)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        constrained_beam_search(step, index=index, **args)
