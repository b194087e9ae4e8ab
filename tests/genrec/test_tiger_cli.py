"""``letter-fast train-tiger`` / ``letter-fast evaluate``: config file + overrides, outputs, one-line errors."""

import json

import pytest
import torch

from letter_fast.cli import main as cli_main
from letter_fast.commands.evaluate import EvaluateConfig
from letter_fast.config import load_settings
from letter_fast.data import make_synthetic_catalog, write_index_json
from letter_fast.genrec.train import TigerTrainConfig, load_tiger

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiger_cli")
    ds = make_synthetic_catalog(num_items=32, num_users=40, num_semantic_clusters=4, num_collab_groups=4,
                                min_length=5, max_length=8, seed=0)
    folder = ds.save(root / "Syn")
    codes = torch.stack([torch.arange(32) // 8, (torch.arange(32) // 2) % 4, torch.arange(32) % 2], 1)
    write_index_json(root / "syn.index.json", codes)
    return folder, root / "syn.index.json"


def test_train_then_evaluate(data_folder, tmp_path, capsys):
    folder, index = data_folder
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("num_layers = 1\nnum_decoder_layers = 1\nd_model = 16\nd_ff = 32\nnum_heads = 2\nd_kv = 8\n"
                   "epochs = 5\nbatch_size = 64\nnum_beams = 10\n")
    out = tmp_path / "run"
    rc = cli_main(["train-tiger", str(folder), "--index", str(index), "--config", str(cfg),
                   "--epochs", "2", "--lr", "0.003", "--out-dir", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "recall@10" in printed and "| TIGER on" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["users"] == 40 and 0 <= metrics["metrics"]["ndcg@10"] <= 1
    saved = load_settings(TigerTrainConfig, out)  # the run's settings.toml: defaults <- file <- flags
    assert (saved.epochs, saved.d_model, saved.lr, saved.num_beams, saved.progress) == (2, 16, 0.003, 10, False)
    assert saved == load_tiger(out / "best.pt")[2]
    assert len(json.loads((out / "history.json").read_text())) == 2
    evaluate = ["evaluate", str(folder), "--index", str(index), "--checkpoint", str(out / "best.pt"),
                "--split", "valid", "--num-beams", "10", "--out-dir", str(tmp_path / "eval"), "--no-progress"]
    assert cli_main(evaluate) == 0
    result = json.loads((tmp_path / "eval" / "valid_metrics.json").read_text())
    assert result["split"] == "valid" and result["users"] == 40
    assert (tmp_path / "eval" / "valid_metrics.md").read_text().startswith("| model |")
    assert load_settings(EvaluateConfig, tmp_path / "eval" / "valid_settings.toml").num_beams == 10
    capsys.readouterr()
    assert cli_main(evaluate) == 0  # same checkpoint, identifiers and settings: the stored result is reused
    assert "result reused" in capsys.readouterr().out
    assert cli_main(evaluate + ["--no-resume"]) == 0
    assert "result reused" not in capsys.readouterr().out
    assert json.loads((tmp_path / "eval" / "valid_metrics.json").read_text())["metrics"] == result["metrics"]


def one_line_error(capsys, argv, *fragments):
    capsys.readouterr()
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_errors_are_one_line(data_folder, tmp_path, capsys):
    folder, index = data_folder
    one_line_error(capsys, ["train-tiger"], "give a data set")
    one_line_error(capsys, ["train-tiger", str(tmp_path / "nope")], "not found")
    one_line_error(capsys, ["train-tiger", str(folder)], "no Synthetic.index.json", "--index")
    one_line_error(capsys, ["train-tiger", str(folder), "--index", str(tmp_path / "x.json")], "not found")
    one_line_error(capsys, ["train-tiger", str(folder), "--index", str(index), "--tau", "hot"],
                   "expected float")
    one_line_error(capsys, ["train-tiger", str(folder), "--index", str(index), "--tau", "0"], "tau")
    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text("learning_rate = 1\n")
    one_line_error(capsys, ["train-tiger", str(folder), "--config", str(bad_cfg)], "unknown key")
    one_line_error(capsys, ["evaluate", str(folder), "--index", str(index), "--checkpoint",
                            str(tmp_path / "none.pt")], "checkpoint not found")
    junk = tmp_path / "junk.pt"
    torch.save({"x": 1}, junk)
    one_line_error(capsys, ["evaluate", str(folder), "--index", str(index), "--checkpoint", str(junk)],
                   "not a letter_fast TIGER checkpoint")
    one_line_error(capsys, ["evaluate", str(folder), "--checkpoint", str(junk), "--num-beams", "5"],
                   "--num-beams")
