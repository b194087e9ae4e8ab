"""letter-fast run: the whole pipeline end to end on the synthetic catalog (tiny budgets)."""

import json

import pytest
import torch

from letter_fast.cli import main


@pytest.mark.slow
def test_run_on_synthetic_catalog(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--out-dir", str(out), "--tokenizer-epochs", "3", "--sasrec-minutes", "0.02",
            "--tiger-minutes", "0.05", "--no-progress"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["test"]) == {"SASRec", "TIGER on letter identifiers"}
    for metrics in results["test"].values():
        assert 0.0 <= metrics["ndcg@10"] <= metrics["recall@10"] <= 1.0
    assert results["tokenizer"]["collision_rate"] == 0.0
    assert "results on Synthetic" in capsys.readouterr().out
    # a second run resumes every stage: the finished tokenizer is reused as it is (SASRec's budget
    # counts per run, so it may train on from its checkpoint)
    codes = torch.load(out / "tokenizer" / "Synthetic.codes.pt")
    assert main(argv) == 0
    assert torch.equal(torch.load(out / "tokenizer" / "Synthetic.codes.pt"), codes)
