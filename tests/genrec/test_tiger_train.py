"""TIGER training: validation-driven loop, resumable checkpoints, torchrun/DDP on CPU, the pipeline entry point."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from letter_fast.config import config_from_mapping
from letter_fast.data import leave_one_out, make_synthetic_catalog
from letter_fast.genrec.train import TigerTrainConfig, load_tiger, train_and_evaluate_tiger, train_tiger

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]


def tiny_config(**kw):
    base = dict(num_layers=1, num_decoder_layers=1, d_model=16, d_ff=32, num_heads=2, d_kv=8, dropout=0.1,
                batch_size=32, lr=5e-3, epochs=2, num_beams=10, eval_batch_size=64, progress=False, tau=0.7)
    base.update(kw)
    return TigerTrainConfig(**base)


def tiny_data(users=60):
    ds = make_synthetic_catalog(num_items=32, num_users=users, num_semantic_clusters=4, num_collab_groups=4,
                                min_length=5, max_length=9, seed=0)
    codes = torch.stack([torch.arange(32) // 8, (torch.arange(32) // 2) % 4, torch.arange(32) % 2], 1)
    return ds, codes


class Interrupt(Exception):
    pass


def test_resume_after_interruption_ends_in_the_same_state(tmp_path):
    ds, codes = tiny_data()
    split = leave_one_out(ds.histories, ds.num_items)
    cfg = tiny_config(eval_every_steps=2)
    straight = train_tiger(split, codes, cfg, out_dir=tmp_path / "a", log=lambda *a: None)

    calls = []

    def crash_on_third_validation(msg):
        calls.append(msg)
        if len(calls) == 3:
            raise Interrupt()

    with pytest.raises(Interrupt):
        train_tiger(split, codes, cfg, out_dir=tmp_path / "b", log=crash_on_third_validation)
    assert (tmp_path / "b" / "checkpoint.pt").exists()
    resumed = train_tiger(split, codes, cfg, out_dir=tmp_path / "b", log=lambda *a: None)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), f"parameter {name} differs after resume"
    assert [h["valid_ndcg@10"] for h in straight.history] == [h["valid_ndcg@10"] for h in resumed.history]
    assert json.loads((tmp_path / "b" / "history.json").read_text()) == resumed.history
    with pytest.raises(ValueError, match="other settings .*tau"):
        train_tiger(split, codes, tiny_config(eval_every_steps=2, tau=1.0), out_dir=tmp_path / "b", log=print)
    model, vocab, config = load_tiger(tmp_path / "b" / "best.pt")
    assert config == cfg and vocab.num_levels == 3
    for name, p in model.state_dict().items():
        assert torch.equal(p, b[name]), "best.pt does not hold the best model"


def test_train_and_evaluate_reports_test_metrics_and_early_stops(tmp_path):
    ds, codes = tiny_data(users=40)
    metrics = train_and_evaluate_tiger(ds, codes, tiny_config(epochs=50, patience=1), out_dir=tmp_path,
                                       log=lambda *a: None)
    for key in ("recall@5", "ndcg@5", "recall@10", "ndcg@10"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["recall@10"] >= metrics["recall@5"] and metrics["test_users"] == 40
    assert metrics["stopped"] == "early stopping"
    assert "train_samples_per_s" not in metrics        # timings stay out of results: they never repeat
    assert json.loads((tmp_path / "timing.json").read_text())["train_samples_per_s"] > 0


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="tau must be > 0"):
        tiny_config(tau=0.0).validate()
    with pytest.raises(ValueError, match="unknown key 'learning_rate'"):
        config_from_mapping(TigerTrainConfig, {"learning_rate": 1e-3})


WORKER = """
import json, sys, torch
from letter_fast.data import leave_one_out
from letter_fast.genrec.train import train_tiger
from tests.genrec.test_tiger_train import tiny_config, tiny_data
ds, codes = tiny_data()
split = leave_one_out(ds.histories, ds.num_items)
run = train_tiger(split, codes, tiny_config(epochs=2), out_dir=sys.argv[1], log=lambda *a: None)
rank = torch.distributed.get_rank()
flat = torch.cat([p.detach().flatten() for p in run.model.parameters()])
gathered = [torch.zeros_like(flat) for _ in range(2)]
torch.distributed.all_gather(gathered, flat)
json.dump({"same_params": bool(torch.equal(gathered[0], gathered[1])), "history": run.history},
          open(f"{sys.argv[1]}/rank{rank}.json", "w"))
torch.distributed.destroy_process_group()
"""


def free_port() -> int:
    """A port nobody listens on now (a fixed one fails when a previous run's socket lingers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # (the mark sat on free_port above, a helper, where it marked nothing)
def test_ddp_two_cpu_processes(tmp_path):
    """torchrun with 2 CPU processes (gloo): ranks stay in sync, validation covers every user once."""
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(free_port()), str(tmp_path / "worker.py"), str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["same_params"] and r1["same_params"]
    ds, _ = tiny_data()
    valid_users = sum(1 for h in ds.histories if len(h) >= 3)
    assert all(h["valid_users"] == valid_users for h in r0["history"])
    timeless = lambda h: [{k: v for k, v in e.items() if not k.endswith("time_s")} for e in h]  # noqa: E731
    assert timeless(r0["history"]) == timeless(r1["history"])
    assert (tmp_path / "best.pt").exists() and (tmp_path / "checkpoint.pt").exists()
    # the checkpoint keeps both ranks' random streams (each rank resumes its own dropout stream)
    from letter_fast.training import load_checkpoint

    rngs = load_checkpoint(tmp_path / "checkpoint.pt", "tiger.checkpoint", 1)["rng"]
    assert len(rngs) == 2 and not torch.equal(rngs[0]["torch"], rngs[1]["torch"])
