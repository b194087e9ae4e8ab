"""The command line and the installation report."""

import json
import subprocess
import sys

import numpy as np
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
    out = subprocess.run([sys.executable, "-m", "letter_fast.info", "--json"], capture_output=True, text=True, check=True)
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
