"""benchmarks/downstream_table.py: finished runs give test metrics (mean +- std), running ones their progress."""

import json
import statistics

import pytest

from benchmarks import downstream_table as dt


def _run(folder, ndcgs, test=None):
    folder.mkdir()
    history = [{"epoch": i + 1, "step": 100 * (i + 1), "valid_ndcg@10": v} for i, v in enumerate(ndcgs)]
    (folder / "history.json").write_text(json.dumps(history))
    if test is not None:
        (folder / "metrics.json").write_text(json.dumps({"metrics": {"recall@5": test, "ndcg@5": test,
                                                                     "recall@10": test, "ndcg@10": test}}))
    return folder


def test_partial_table_counts_only_finished_runs(tmp_path):
    rows = [dt.run_row("letter", _run(tmp_path / "a", [0.01, 0.03, 0.02], test=0.025)),
            dt.run_row("letter", _run(tmp_path / "b", [0.02, 0.04], test=0.035)),
            dt.run_row("letter", _run(tmp_path / "c", [0.05, 0.01])),
            dt.run_row("rqvae", tmp_path / "missing")]
    assert rows[2]["finished"] is False and rows[2]["best_valid_ndcg@10"] == 0.05 and rows[2]["best_step"] == 100
    assert rows[3]["steps"] == 0 and rows[3]["best_step"] is None
    text = dt.markdown(rows, {"recall@5": 0.1, "ndcg@5": 0.1, "recall@10": 0.2, "ndcg@10": 0.2})
    letter = next(line for line in text.splitlines() if line.startswith("| letter | 2 of 3"))
    assert f"0.0300 +- {statistics.stdev([0.025, 0.035]):.4f}" in letter
    assert "| rqvae | 0 of 1 | - |" in text
    assert "| rqvae | missing | not started | 0 | - | - |" in text
    assert "| letter | c | training | 200 | 0.05 (100) | - |" in text


def test_main_writes_csv_and_plot_of_finished_and_running_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(dt, "RESULTS", tmp_path / "results")
    (tmp_path / "results").mkdir()
    a = _run(tmp_path / "a", [0.01, 0.03], test=0.025)
    b = _run(tmp_path / "b", [0.02])
    assert dt.main([f"letter={a},{b}", f"rqvae={tmp_path / 'missing'}", "--name", "t"]) == 0
    csv_text = (tmp_path / "results" / "t.csv").read_text()
    assert "_curve" not in csv_text and csv_text.count("\n") == 4     # header + one row per run
    assert (tmp_path / "results" / "t.png").stat().st_size > 0
    assert "| letter | 1 of 2 | 0.0250 |" in capsys.readouterr().out


def test_write_csv_leaves_private_keys_out_and_refuses_unknown_ones(tmp_path):
    from benchmarks.harness import write_csv

    write_csv(tmp_path / "a.csv", [{"x": 1, "_plot": [1, 2]}], ["x"])
    assert (tmp_path / "a.csv").read_text().split() == ["x", "1"]
    with pytest.raises(ValueError, match="fields not in fieldnames"):
        write_csv(tmp_path / "b.csv", [{"x": 1, "y": 2}], ["x"])
    assert not (tmp_path / "b.csv").exists()
