"""The command line and the installation report."""

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from letter_fast import cli, info


def test_info_reports_every_backend(capsys):
    info.main([])
    out = capsys.readouterr().out
    for name in ("reference", "cpu", "triton", "cuda"):
        assert name in out
    data = info.collect()
    assert set(data["backends"]["cpu"]) == {"reference", "cpu", "triton", "cuda"}
    assert data["backends"]["cpu"]["reference"] is None


def test_info_json_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "letter_fast.info", "--json"], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout)["torch"] == torch.__version__


def test_quantize_round_trip(tmp_path):
    z = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    cb = torch.randn(3, 16, 8)
    np.save(tmp_path / "z.npy", z)
    torch.save(cb, tmp_path / "cb.pt")
    assert cli.main(["quantize", "--embeddings", str(tmp_path / "z.npy"), "--codebooks", str(tmp_path / "cb.pt"),
                     "--out", str(tmp_path / "codes.npy")]) == 0
    codes = np.load(tmp_path / "codes.npy")
    assert codes.shape == (50, 3)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_quantize_synthetic_check(capsys):
    assert cli.main(["quantize", "--synthetic", "500"]) == 0
    assert "reference" in capsys.readouterr().out


def test_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["quantize", "--embeddings", str(tmp_path / "missing.npy"), "--codebooks", "x", "--out", "y"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "embeddings file not found" in err
    (tmp_path / "bad.pt").write_text("not a tensor")
    assert cli.main(["quantize", "--embeddings", str(tmp_path / "bad.pt"), "--codebooks", "x", "--out", "y"]) == 2
    assert "could not read embeddings" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- common flags


COMMON_FLAGS = ("--out-dir", "--resume", "--no-resume", "--seed", "--device", "--config", "--print-config",
                "--data-root", "--progress")


def test_every_data_set_command_takes_the_common_flags():
    from letter_fast.commands.common import DATASET_COMMANDS

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(DATASET_COMMANDS) | {"info", "inspect", "quantize", "add-items"} == set(sub.choices)
    for name in DATASET_COMMANDS:
        text = sub.choices[name].format_help()
        for flag in COMMON_FLAGS:
            assert flag in text, f"letter-fast {name} --help has no {flag}"
        positional = [a for a in sub.choices[name]._actions if not a.option_strings and a.dest != "help"]
        assert [a.dest for a in positional] == ["dataset"], name  # the data set is the one positional argument


def test_print_config_applies_file_and_flags(tmp_path, capsys):
    import tomllib

    (tmp_path / "c.toml").write_text("lr = 0.25\nepochs = 4\n")
    assert cli.main(["train-cf", "--config", str(tmp_path / "c.toml"), "--epochs", "6", "--seed", "3",
                     "--print-config"]) == 0
    values = tomllib.loads(capsys.readouterr().out)
    assert (values["lr"], values["epochs"], values["seed"], values["dim"]) == (0.25, 6, 3, 32)
    for name in ("embed", "evaluate", "run", "tokenize", "train-tiger"):
        assert cli.main([name, "--print-config", "--device", "cpu"] +
                        (["--checkpoint", "x.pt"] if name == "evaluate" else [])) == 0
        assert tomllib.loads(capsys.readouterr().out)["device"] == "cpu", name


def test_config_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text("learning_rate = 1\n")
    (tmp_path / "broken.toml").write_text("lr = = 1\n")
    for argv, fragment in [(["train-cf", "x", "--config", str(tmp_path / "bad.toml")], "unknown key 'learning_rate'"),
                           (["run", "--config", str(tmp_path / "broken.toml")], "not valid TOML"),
                           (["run", "--config", str(tmp_path / "none.toml")], "config file not found"),
                           (["tokenize", "--synthetic", "--seed", "1", "--epochs", "many"], "expected int"),
                           (["run", "--tiger-size", "huge"], "tiger_size")]:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and fragment in err, (argv, err)


# ----------------------------------------------------------------------------------------- the package


def test_subpackages_resolve_lazily():
    import letter_fast as lf
    from letter_fast.genrec import ItemIndex

    assert lf.genrec.ItemIndex is ItemIndex
    from letter_fast.data import load_dataset
    from letter_fast.pipeline import run_pipeline

    assert lf.tokenizer.__name__ == "letter_fast.tokenizer" and lf.cf.__name__ == "letter_fast.cf"
    assert lf.data.load_dataset is load_dataset and lf.pipeline.run_pipeline is run_pipeline
    assert lf.ops.residual_quantize is lf.residual_quantize
    for name in lf.ops.__all__:
        assert getattr(lf, name) is getattr(lf.ops, name)
    assert set(lf.ops.__all__) <= set(lf.__all__) and "genrec" in dir(lf)
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = lf.no_such_thing  # the lazy module __getattr__ must reject a name it does not know


def test_import_is_cheap():
    code = ("import sys, letter_fast as lf\n"
            "heavy = ['transformers', 'matplotlib', 'letter_fast.genrec', 'letter_fast.tokenizer', 'letter_fast.cf',"
            " 'letter_fast.data', 'letter_fast.pipeline', 'letter_fast.training', 'letter_fast.nn']\n"
            "print(','.join(m for m in heavy if m in sys.modules))\n"
            "lf.genrec\n"
            "print('letter_fast.genrec' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "", f"import letter_fast loaded {out[0]}"
    assert out[1] == "True"
