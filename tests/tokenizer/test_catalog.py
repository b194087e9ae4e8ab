"""A living catalog: add-items keeps existing identifiers, adds collision-free ones, versions the index;
ItemIndex.add_items / retire; one clear error per bad input, nothing written."""

import json

import numpy as np
import pytest
import torch

from letter_fast import cli
from letter_fast.data.formats import read_index_json, write_index_json
from letter_fast.genrec import ItemIndex, constrained_beam_search
from letter_fast.tokenizer.assign import collision_rate_np
from letter_fast.tokenizer.catalog import PrefixGroupFullError, add_items, assign_new_codes, read_index_meta
from letter_fast.tokenizer.model import LetterTokenizer
from letter_fast.tokenizer.pipeline import collision_free_codes
from letter_fast.tokenizer.train import MODEL_KIND, VERSION
from letter_fast.training import save_checkpoint, seeded

D = 8


def _tokenizer(tmp_path, levels=3, N=4):
    with seeded(0):
        model = LetterTokenizer(input_dim=D, hidden_dims=(16,), latent_dim=4, num_levels=levels, codebook_size=N,
                                alpha=0.0, beta=0.0)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((64, D)).astype(np.float32))
    model.init_codebooks(x, seed=0)
    save_checkpoint(tmp_path / "best.pt", MODEL_KIND, VERSION,
                    {"model": model.state_dict(), "settings": model.settings(), "epoch": 0})
    return model


def _catalog(tmp_path, V=30, n=12, levels=3, N=4, seed=1):
    model = _tokenizer(tmp_path, levels, N)
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((V + n, D)).astype(np.float32)
    codes, _ = collision_free_codes(model, torch.from_numpy(emb[:V]))
    write_index_json(tmp_path / "X.index.json", codes)
    np.save(tmp_path / "new.npy", emb[V:])
    return model, codes, emb


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("levels,N", [(3, 4), (2, 8)])
def test_add_items_keeps_existing_and_has_no_collisions(tmp_path, levels, N):
    model, codes, emb = _catalog(tmp_path, levels=levels, N=N)
    before = (tmp_path / "X.index.json").read_text()
    out = tmp_path / "v1"
    summary = add_items(tmp_path, tmp_path / "X.index.json", tmp_path / "new.npy", out)
    assert (summary["version"], summary["previous_items"], summary["added"]) == (1, 30, 12)
    grown = read_index_json(out / "X.index.json")
    assert grown.shape == (42, codes.shape[1])
    assert torch.equal(grown[:30], codes)
    # byte for byte: the old file is a prefix of the new one (items in id order, the same rendering)
    assert (out / "X.index.json").read_text().startswith(before[:-1] + ", ")
    assert collision_rate_np(grown) == 0.0
    assert torch.equal(torch.from_numpy(np.load(out / "X.codes.npy")), grown)
    assert read_index_meta(out / "X.index.json")["version"] == 1
    # a second update counts on; the items placed without a collision keep their nearest codes
    np.save(tmp_path / "more.npy", emb[:3] + 0.01)
    again = add_items(tmp_path / "best.pt", out / "X.index.json", tmp_path / "more.npy")
    assert again["version"] == 2 and again["num_items"] == 45
    final = read_index_json(out / "X.index.json")
    assert torch.equal(final[:42], grown) and collision_rate_np(final) == 0.0
    assert [h["version"] for h in read_index_meta(out / "X.index.json")["history"]] == [1, 2]
    ItemIndex.from_codes(final)  # no collision


def test_assign_new_codes_rule():
    book = np.eye(4, dtype=np.float32)
    existing = np.array([[0, 0], [0, 1]])
    new = np.array([[0, 0], [0, 0], [1, 2]])
    res = np.array([[1, 0, 0, 0], [0.9, 0, 0.5, 0], [0, 0, 1, 0]], dtype=np.float32)
    out = assign_new_codes(existing, new, res, book, num_levels=2)
    # (0, 0) and (0, 1) are taken: greedy, nearest first: item 0 takes the nearest free code (2 and 3 tie: the
    # lower), item 1 the one left; item 2 keeps its nearest identifier
    assert out.tolist() == [[0, 2], [0, 3], [1, 2]]
    # a full prefix group and no extra level
    with pytest.raises(PrefixGroupFullError, match=r"prefix group full: new item 5 has the prefix \(0,\)"):
        assign_new_codes(np.array([[0, c] for c in range(4)]), np.array([[1, 0], [0, 1]]), res[:2], book,
                         num_levels=2)
    # with an extra level the group holds N * N slots: the nearest code with room, its lowest free slot
    ext = np.array([[0, c, 0] for c in range(4)] + [[0, 0, 1]])
    out = assign_new_codes(ext, np.array([[0, 0]]), res[:1], book, num_levels=2)
    assert out.tolist() == [[0, 0, 2]]
    # ... but a free last-level code comes first
    out = assign_new_codes(np.array([[0, 0, 0], [0, 0, 1]]), np.array([[0, 0]]), res[:1], book, num_levels=2)
    assert out.tolist() == [[0, 1, 0]]


def test_item_index_add_and_retire_hide_items_from_beam_search():
    g = torch.Generator().manual_seed(0)
    codes = torch.unique(torch.randint(0, 3, (20, 3), generator=g), dim=0)
    V = codes.shape[0]
    index = ItemIndex.from_codes(codes[:V - 4], num_codes=3)
    grown = index.add_items(codes[V - 4:], torch.arange(V - 4, V))
    assert torch.equal(grown.codes_of(torch.arange(V)), codes)
    with pytest.raises(ValueError, match="item id 2 \\(row 0\\) is already in the index"):
        index.add_items(codes[V - 4:V - 3], torch.tensor([2]))
    # retire every item under the first prefix (c_0 = code of item 0) and one more
    first = codes[:, 0] == codes[0, 0]
    gone = torch.cat([torch.nonzero(first).squeeze(1), torch.tensor([V - 1])])
    alive = grown.retire(gone)
    assert alive.num_items == V - gone.numel()
    assert bool((alive.walk(codes[:1, :1]) == -1).all()), "a retired-only prefix disappears"

    def step(prefix, parent):   # every code equally likely: the search returns every reachable item
        return torch.zeros(prefix.shape[0], 3)

    items, _ = constrained_beam_search(step, 2, V, alive, num_return=V)
    found = set(items[items >= 0].tolist())
    assert found == set(range(V)) - set(gone.tolist())
    with pytest.raises(ValueError, match="is not in the index"):
        alive.retire(torch.tensor([int(gone[0])]))
    with pytest.raises(ValueError, match="empty index"):
        alive.retire(alive.all_codes()[1])


def test_bad_inputs_one_error_each_nothing_written(tmp_path, capsys):
    _catalog(tmp_path)
    emb = np.load(tmp_path / "new.npy")
    nan = emb.copy()
    nan[5, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "wide.npy", np.zeros((3, D + 1), dtype=np.float32))
    np.save(tmp_path / "ints.npy", np.zeros((3, D), dtype=np.int32))
    np.save(tmp_path / "dup_ids.npy", np.arange(12) + 29)
    np.save(tmp_path / "twice.npy", np.array([30] * 2 + list(range(32, 42))))
    write_index_json(tmp_path / "Big.index.json", torch.tensor([[0, 1, 7], [1, 2, 3]]))
    write_index_json(tmp_path / "Short.index.json", torch.tensor([[0, 1], [1, 2]]))
    base = ["add-items", str(tmp_path / "X.index.json"), "--tokenizer", str(tmp_path), "--out-dir",
            str(tmp_path / "out")]
    cases = [
        (["--embeddings", str(tmp_path / "nan.npy")], "row 5 holds NaN/Inf"),
        (["--embeddings", str(tmp_path / "wide.npy")], "are 9-d, expected 8"),
        (["--embeddings", str(tmp_path / "ints.npy")], "must be float16, float32 or float64, got int32"),
        (["--embeddings", str(tmp_path / "new.npy"), "--item-ids", str(tmp_path / "dup_ids.npy")],
         "new item id 29 (row 0) already exists in the index"),
        (["--embeddings", str(tmp_path / "new.npy"), "--item-ids", str(tmp_path / "twice.npy")],
         "new item id 30 appears twice (rows 0 and 1)"),
        (["--embeddings", str(tmp_path / "missing.npy")], "file not found"),
    ]
    before = _files(tmp_path)
    for extra, fragment in cases:
        assert cli.main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert fragment in err and err.count("\n") == 0, err
    for index, fragment in [("Big", "item 0, level 2: code 7 is outside [0, 4)"),
                            ("Short", "identifiers have 2 levels, the tokenizer has 3")]:
        argv = ["add-items", str(tmp_path / f"{index}.index.json"), "--tokenizer", str(tmp_path / "best.pt"),
                "--embeddings", str(tmp_path / "new.npy")]
        assert cli.main(argv) == 2
        assert fragment in capsys.readouterr().err
    assert _files(tmp_path) == before, "nothing half-written"


def test_cli_writes_versioned_index(tmp_path, capsys):
    _catalog(tmp_path)
    assert cli.main(["add-items", str(tmp_path / "X.index.json"), "--tokenizer", str(tmp_path),
                     "--embeddings", str(tmp_path / "new.npy")]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[:out.index("}") + 1])["version"] == 1
    assert read_index_json(tmp_path / "X.index.json").shape[0] == 42
    assert json.loads((tmp_path / "X.index.meta.json").read_text())["num_items"] == 42
