"""benchmarks/catalog_coldstart.py: the new-item split, the id remapping, and the whole protocol on tiny data."""

import json

import numpy as np
import pytest
import torch

from benchmarks import catalog_coldstart as cc


def test_new_items_are_a_seeded_uniform_share():
    a = cc.choose_new_items(1000, 0.1, seed=3)
    assert len(a) == 100 and len(set(a.tolist())) == 100 and np.all(np.diff(a) > 0)
    assert np.array_equal(a, cc.choose_new_items(1000, 0.1, seed=3))
    assert not np.array_equal(a, cc.choose_new_items(1000, 0.1, seed=4))
    with pytest.raises(ValueError):
        cc.choose_new_items(5, 0.01, seed=0)


def test_mapping_puts_old_items_first_and_round_trips():
    new = np.array([1, 4])
    to_exp, to_orig = cc.item_mapping(6, new)
    assert to_orig.tolist() == [0, 2, 3, 5, 1, 4]
    assert to_exp.tolist() == [0, 4, 1, 2, 5, 3]
    assert np.array_equal(to_orig[to_exp], np.arange(6))
    histories = [[0, 1, 2, 4], [3, 5, 1], [4, 2, 0]]
    # training data: new items gone, old ones renamed, order kept
    assert cc.training_histories(histories, to_exp, 4) == [[0, 1], [2, 3], [1, 0]]
    # evaluation: filtered earlier items + the original last item (user 0's target is new item 4 -> 5)
    ev = cc.evaluation_histories(histories, to_exp, 4)
    assert ev == [[0, 1, 5], [2, 3, 4], [1, 0]]
    assert [to_orig[h[-1]] for h in ev] == [h[-1] for h in histories]


def test_random_codes_avoid_old_and_each_other():
    old = np.array([[a, b] for a in range(3) for b in range(3) if (a, b) != (1, 1)])
    new = cc.random_new_codes(old, 1, codebook_size=3, seed=0)
    assert new.tolist() == [[1, 1]]  # the one free identifier
    new = cc.random_new_codes(old[:4], 5, codebook_size=3, seed=1)
    both = np.concatenate([old[:4], new])
    assert len({tuple(c) for c in both.tolist()}) == len(both)
    assert np.array_equal(new, cc.random_new_codes(old[:4], 5, codebook_size=3, seed=1))
    with pytest.raises(ValueError):
        cc.random_new_codes(old, 2, codebook_size=3, seed=0)


@pytest.mark.slow
def test_protocol_runs_end_to_end_on_tiny_data(tmp_path):
    from letter_fast.data.formats import read_index_json, write_inter_json

    rng = np.random.default_rng(0)
    V, U = 60, 90
    data = tmp_path / "tiny"
    histories = [rng.choice(V, size=int(rng.integers(5, 9)), replace=False).tolist() for _ in range(U)]
    histories[0] = list(range(V))  # every item is used
    write_inter_json(data / "Tiny.inter.json", histories)
    np.save(tmp_path / "emb.npy", rng.standard_normal((V, 16)).astype(np.float32))
    torch.save(torch.randn(V, 32), tmp_path / "cf.pt")
    runs = tmp_path / "runs"
    argv = [
        "--data",
        str(data),
        "--embeddings",
        str(tmp_path / "emb.npy"),
        "--cf",
        str(tmp_path / "cf.pt"),
        "--runs",
        str(runs),
        "--tokenizer-epochs",
        "2",
        "--cf-epochs",
        "1",
        "--steps",
        "2",
        "--valid-users",
        "0",
        "--results",
        str(tmp_path / "results"),
        "--name",
        "tiny",
    ]
    assert cc.main(argv) == 0

    split = json.loads((runs / "split.json").read_text())
    new = np.asarray(split["new_items"])
    assert len(new) == 6
    to_exp, _ = cc.item_mapping(V, new)
    num_old = V - len(new)
    a = read_index_json(runs / "index-A" / "Tiny.index.json")
    c = read_index_json(runs / "index-C" / "Tiny.index.json")
    old_only = read_index_json(runs / "tokenizer-old" / "Tiny.index.json")
    assert a.shape[0] == c.shape[0] == V and old_only.shape[0] == num_old
    assert torch.equal(a[:num_old], old_only) and torch.equal(c[:num_old], old_only)
    assert not torch.equal(a[num_old:], c[num_old:])
    # TIGER's training data never holds a new item
    trained = json.loads((runs / "tiger-data-A" / "Tiny.inter.json").read_text())
    assert max(i for h in trained.values() for i in h) < num_old
    rows = {
        (r["tiger_index"], r["eval_index"], r["group"]): r
        for r in json.loads((runs / "eval-tigerA-indexA.json").read_text())
        + json.loads((runs / "eval-tigerA-indexC.json").read_text())
        + json.loads((runs / "eval-tigerB-indexB.json").read_text())
    }
    targets_new = sum(to_exp[h[-1]] >= num_old for h in histories)
    for pair in cc.PAIRS:
        assert rows[(*pair, "new")]["users"] == targets_new
        assert rows[(*pair, "new")]["users"] + rows[(*pair, "old")]["users"] == U
        assert 0.0 <= rows[(*pair, "new")]["new_item_share@10"] <= 1.0
    assert (tmp_path / "results" / "tiny.md").exists() and (tmp_path / "results" / "tiny.png").exists()
    # resumable: a second call reuses every stage and rewrites the same table
    table = (tmp_path / "results" / "tiny.md").read_text()
    assert cc.main(argv) == 0
    assert (tmp_path / "results" / "tiny.md").read_text() == table
