"""The field's json layout: round trips, validation messages that name the file and entry, real files."""

import json

import pytest
import torch

from letter_fast.data import (
    DataFormatError,
    Dataset,
    codes_to_index,
    index_to_codes,
    load_dataset,
    read_index_json,
    read_inter_json,
    read_item_json,
    resolve_data_root,
    write_index_json,
    write_inter_json,
    write_item_json,
)
from tests.data.real import data_folder


def dump(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_inter_round_trip(tmp_path):
    histories = [[0, 1, 2], [2, 1], [3]]
    path = write_inter_json(tmp_path / "X.inter.json", histories)
    assert read_inter_json(path) == histories
    assert read_inter_json(path, num_items=4) == histories
    assert not list(tmp_path.glob(".*.tmp")), "atomic write left a temporary file"


def test_inter_keys_in_any_order(tmp_path):
    path = dump(tmp_path / "X.inter.json", {"1": [5], "0": [4, 3]})
    assert read_inter_json(path) == [[4, 3], [5]]


@pytest.mark.parametrize("obj, words", [
    ({"0": [1], "2": [3]}, ["contiguous", "user 1 is missing"]),
    ({"0": [1], "1": []}, ["user 1", "empty history"]),
    ({"0": [1], "x": [2]}, ["'x'", "not an integer"]),
    ({"0": [1, -2]}, ["user 0, position 1", "-2"]),
    ({"0": [1, "2"]}, ["user 0, position 1", "'2'"]),
    ({"0": [1], "1": 5}, ["user 1", "list"]),
    ([[1, 2]], ["json object"]),
])
def test_inter_validation_names_file_and_entry(tmp_path, obj, words):
    path = dump(tmp_path / "Bad.inter.json", obj)
    with pytest.raises(DataFormatError) as err:
        read_inter_json(path)
    message = str(err.value)
    assert str(path) in message
    for word in words:
        assert word in message, message


def test_inter_unknown_item(tmp_path):
    path = dump(tmp_path / "X.inter.json", {"0": [0, 1], "1": [1, 7]})
    with pytest.raises(DataFormatError, match=r"user 1, position 1: unknown item 7 .*3 items"):
        read_inter_json(path, num_items=3)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="Nope.inter.json"):
        read_inter_json(tmp_path / "Nope.inter.json")
    bad = tmp_path / "B.inter.json"
    bad.write_text("{not json")
    with pytest.raises(DataFormatError, match="not valid json"):
        read_inter_json(bad)


def test_item_round_trip_and_validation(tmp_path):
    items = [{"title": "a", "description": "d", "brand": "b", "categories": "c"}, {"title": "t"}]
    path = write_item_json(tmp_path / "X.item.json", items)
    back = read_item_json(path, num_items=2)
    assert back[0] == items[0]
    assert back[1]["title"] == "t" and back[1]["description"] == "" and back[1]["brand"] == ""
    with pytest.raises(DataFormatError, match="2 items, but the interactions use 3"):
        read_item_json(path, num_items=3)
    bad = dump(tmp_path / "Y.item.json", {"0": {"title": 3}})
    with pytest.raises(DataFormatError, match=r"item 0: field 'title' must be text"):
        read_item_json(bad)
    cats = dump(tmp_path / "Z.item.json", {"0": {"title": "x", "categories": ["A", "B"]}})
    assert read_item_json(cats)[0]["categories"] == "A, B"


def test_index_round_trip(tmp_path):
    codes = torch.tensor([[12, 201, 7, 99], [0, 0, 0, 0], [255, 3, 3, 1]])
    index = codes_to_index(codes)
    assert index["0"] == ["<a_12>", "<b_201>", "<c_7>", "<d_99>"]
    assert torch.equal(index_to_codes(index), codes)
    path = write_index_json(tmp_path / "X.index.json", codes)
    assert torch.equal(read_index_json(path, num_items=3), codes)
    five = torch.arange(10).view(2, 5)
    assert codes_to_index(five)["1"][-1] == "<e_9>"


@pytest.mark.parametrize("tokens, words", [
    (["<a_1>", "<a_2>"], ["item 1, level 1", "'<a_2>'", "<b_N>"]),
    (["<a_1>", "<b_-2>"], ["item 1, level 1", "'<b_-2>'"]),
    (["<a_1>", "<b_02>"], ["'<b_02>'"]),
    (["<a_1>", "b_2"], ["'b_2'"]),
    (["<a_1>", 2], ["malformed"]),
    (["<a_1>"], ["1 code tokens", "item 0 has 2"]),
    ([], ["non-empty list"]),
])
def test_index_malformed_codes(tmp_path, tokens, words):
    path = dump(tmp_path / "Bad.index.json", {"0": ["<a_1>", "<b_2>"], "1": tokens})
    with pytest.raises(DataFormatError) as err:
        read_index_json(path)
    message = str(err.value)
    assert str(path) in message
    for word in words:
        assert word in message, message


def test_codes_to_index_rejects_bad_tensors():
    with pytest.raises(ValueError, match="non-negative"):
        codes_to_index(torch.tensor([[1, -1]]))
    with pytest.raises(TypeError, match="integer"):
        codes_to_index(torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"\[V, L\]"):
        codes_to_index(torch.zeros(3, dtype=torch.long))


def test_dataset_save_load(tmp_path):
    ds = Dataset("Toy", [[0, 1, 2], [2, 3]], num_items=5, items=[{"title": str(i)} for i in range(5)],
                 codes=torch.arange(10).view(5, 2))
    ds.save(tmp_path / "toy")
    back = load_dataset(tmp_path / "toy")
    assert back.name == "Toy" and back.histories == ds.histories and back.num_items == 5
    assert torch.equal(back.codes, ds.codes) and back.items[4]["title"] == "4"
    assert back.num_users == 2 and back.num_interactions == 5
    # by file path, and by name under an explicit root (case-insensitive)
    assert load_dataset(tmp_path / "toy" / "Toy.inter.json").num_items == 5
    assert load_dataset("TOY", root=tmp_path).name == "Toy"


def test_dataset_validation():
    with pytest.raises(DataFormatError, match="user 1 has unknown item 9"):
        Dataset("T", [[0], [1, 9]], num_items=3)
    with pytest.raises(DataFormatError, match="user 0 has an empty history"):
        Dataset("T", [[]], num_items=3)
    with pytest.raises(ValueError, match=r"embeddings\['x'\] has 2 rows"):
        Dataset("T", [[0]], num_items=3, embeddings={"x": torch.zeros(2, 4)})


def test_load_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="data set not found"):
        load_dataset(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no <Name>.inter.json"):
        load_dataset(tmp_path / "empty")
    monkeypatch.setenv("LETTER_FAST_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="LETTER_FAST_DATA"):
        resolve_data_root()
    monkeypatch.setenv("LETTER_FAST_DATA", str(tmp_path))
    assert resolve_data_root() == tmp_path
    assert resolve_data_root(tmp_path / "empty") == tmp_path / "empty"
    # an index file for fewer items than the interactions use
    folder = tmp_path / "mismatch"
    write_inter_json(folder / "M.inter.json", [[0, 1, 2]])
    write_index_json(folder / "M.index.json", torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(DataFormatError, match="identifiers for 2 items, but the data set has 3"):
        load_dataset(folder)


def test_real_scientific():
    ds = load_dataset(data_folder("scientific"), require_text=True)
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (8317, 4344, 58492)
    assert ds.items[0]["title"].startswith("SUPCO")


def test_real_instruments_index():
    folder = data_folder("instruments")
    ds = load_dataset(folder)
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (24772, 9922, 206153)
    assert ds.codes.shape == (9922, 4) and int(ds.codes.max()) < 256
    # released tokenization: 9,897 distinct identifiers (README)
    assert torch.unique(ds.codes, dim=0).shape[0] == 9897
    # writing it back gives the same json content
    original = json.loads((folder / "Instruments.index.json").read_text())
    assert codes_to_index(ds.codes) == original
