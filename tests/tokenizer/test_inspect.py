"""letter-fast inspect: the measures on hand-built identifiers, one file, several side by side, bad input."""

import json

import pytest
import torch

from letter_fast.cli import main
from letter_fast.data.formats import write_index_json
from letter_fast.io import save_tensor
from letter_fast.tokenizer.diagnostics import duplicate_rate, entropy_bits, inspect_codes, prefix_groups
from tests.data.real import data_folder

# 6 items, 3 levels: items 0 and 1 share an identifier; first-level loads 4 / 1 / 1
CODES = torch.tensor([[0, 1, 2], [0, 1, 2], [0, 1, 3], [0, 2, 0], [1, 0, 0], [2, 0, 0]])


def test_collision_measures_and_prefix_groups():
    assert duplicate_rate(CODES) == 1 / 6  # (V - distinct) / V
    report = inspect_codes(CODES, 4)
    assert report["collision_rate"] == pytest.approx(2 / 6) and report["duplicate_rate"] == pytest.approx(1 / 6)
    assert duplicate_rate(torch.zeros(5, 2, dtype=torch.long)) == 4 / 5
    groups = prefix_groups(CODES)
    assert [(g["length"], g["groups"], g["max"], g["median"]) for g in groups] == [
        (1, 3, 4, 1.0), (2, 4, 3, 1.0), (3, 5, 2, 1.0)]
    assert report["prefix_groups"] == groups
    bits = entropy_bits(CODES, 4)
    p = torch.tensor([4, 1, 1]) / 6
    assert bits[0] == pytest.approx(float(-(p * p.log2()).sum()))


def _write(tmp_path, name, codes):
    path = tmp_path / name
    write_index_json(path, codes)
    return path


def test_one_file_keeps_its_report(tmp_path, capsys):
    path = _write(tmp_path, "A.index.json", CODES)
    cf = torch.tensor([[1.0, 0], [1, 0.01], [0, 1], [0.01, 1], [-1, 0], [-1, 0.01]])
    save_tensor(cf, tmp_path / "cf.pt")
    assert main(["inspect", str(path), "--cf", str(tmp_path / "cf.pt"), "--json", str(tmp_path / "r.json"),
                 "--plot", str(tmp_path / "p.png")]) == 0
    text = capsys.readouterr().out
    assert "6 items, 3 levels, collision rate 33.3333%" in text and "(V - distinct identifiers) / V 16.6667%" in text
    assert "level 1: 3/4 codes used" in text and "CF-nearest pairs" in text and "1 code 4 / 1" in text
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["items"] == 6 and report["cf_neighbour_code_similarity"] == pytest.approx(
        inspect_codes(CODES, 4, cf=cf)["cf_neighbour_code_similarity"])
    assert (tmp_path / "p.png").stat().st_size > 0


def test_several_files_side_by_side(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    other = torch.randint(0, 8, (6, 4), generator=g)
    (tmp_path / "x").mkdir()
    paths = [_write(tmp_path, "A.index.json", CODES), _write(tmp_path / "x", "A.index.json", other)]
    save_tensor(torch.randn(6, 3, generator=g), tmp_path / "cf.pt")
    out_md, out_json, plot = tmp_path / "c.md", tmp_path / "c.json", tmp_path / "c.png"
    assert main(["inspect", *map(str, paths), "--cf", str(tmp_path / "cf.pt"), "--out", str(out_md),
                 "--out", str(out_json), "--plot", str(plot)]) == 0
    text = capsys.readouterr().out
    assert f"{tmp_path.name}/A.index.json" in text and "x/A.index.json" in text  # same names: with the folder
    md = out_md.read_text()
    assert md.startswith("| measure |") and "| collisions: (V - distinct) / V | 16.6667% |" in md
    assert "| items per first-level code: max / median | 4 / 1 |" in md and "CF-pair code similarity" in md
    assert "entropy level 4" in md  # the longer index's level; the 3-level one shows "-"
    reports = json.loads(out_json.read_text())["indexes"]
    assert [r["items"] for r in reports] == [6, 6] and [r["levels"] for r in reports] == [3, 4]
    assert reports[1]["codebook_size"] == int(other.max()) + 1
    assert plot.stat().st_size > 0
    # labels
    assert main(["inspect", *map(str, paths), "--label", "ours", "--label", "theirs"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["ours", "theirs"]


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    good = _write(tmp_path, "A.index.json", CODES)
    (tmp_path / "bad.index.json").write_text(json.dumps({"0": ["<a_1>", "<b_x>"]}))
    (tmp_path / "broken.index.json").write_text("{not json")
    small = _write(tmp_path, "B.index.json", CODES[:4])
    save_tensor(torch.randn(6, 2), tmp_path / "cf.pt")
    cases = [
        ([str(tmp_path / "missing.index.json")], "file not found"),
        ([str(good), str(tmp_path / "missing.index.json")], "missing.index.json"),
        ([str(tmp_path / "bad.index.json")], "malformed code token"),
        ([str(tmp_path / "broken.index.json")], "not valid json"),
        ([str(good), str(small), "--cf", str(tmp_path / "cf.pt")], "item counts differ"),
        ([str(small), "--cf", str(tmp_path / "cf.pt")], "4 items"),
        ([str(good), str(small), "--label", "one"], "--label given 1 times for 2 files"),
        ([str(good), str(small), "--before", str(good)], "give one file"),
        ([str(good), "--out", str(tmp_path / "x.txt")], "--out must end in .md or .json"),
        ([str(good), "--codebook-size", "2"], "does not fit --codebook-size 2"),
    ]
    for argv, expected in cases:
        assert main(["inspect", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and expected in err, (argv, err)
    # without --cf indexes of different catalogs compare
    assert main(["inspect", str(good), str(small)]) == 0


def test_released_instruments_index(tmp_path, capsys):
    folder = data_folder("instruments")
    assert main(["inspect", str(folder / "Instruments.index.json"), "--cf", str(folder / "Instruments.sasrec-emb32.pt"),
                 "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["items"], report["levels"], report["codebook_size"]) == (9922, 4, 256)
    # the released index has a few items on shared identifiers
    assert 0 < report["duplicate_rate"] < report["collision_rate"] < 0.01
    assert 0.0 < report["cf_neighbour_code_similarity"] < 1.0
    assert [u["codes_used"] for u in report["levels_usage"]][1:] == [256, 256, 256]
