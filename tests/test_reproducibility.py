"""Runs repeat exactly on CPU: the same command twice gives the same bytes, and a run killed by a real SIGKILL
(between checkpoint writes, or in the middle of one) and started again with the same command ends with exactly
the files of an uninterrupted run. ``timing.json`` (seconds, samples/s) is the one file left out of the
comparison. The kill comes from the test-only ``LETTER_FAST_TEST_KILL_AT`` hook (letter_fast.io.kill_point),
so where it lands is deterministic.

The callers' thread counts differ on purpose (the reference at 2 torch threads, the repeats at 1, the killed
subprocesses at torch's default): every trainer runs at its own ``threads`` setting (default 1) and restores the
caller's count, so the bytes must not depend on the caller's."""

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch

from letter_fast.cli import main as cli_main
from letter_fast.data import make_synthetic_catalog, write_index_json
from letter_fast.io import KILL_ENV

ROOT = Path(__file__).resolve().parents[1]
NOT_COMPARED = {"timing.json"}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes), hidden temporaries included, timing.json left out."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in NOT_COMPARED}


def assert_same_files(a: Path, b: Path) -> None:
    sa, sb = snapshot(a), snapshot(b)
    assert sorted(sa) == sorted(sb), (sorted(sa), sorted(sb))
    differ = [name for name in sa if sa[name] != sb[name]]
    assert not differ, f"files differ between {a} and {b}: {differ}"


def killed_run(argv: list[str], kill_at: str) -> None:
    """Run ``letter-fast argv`` in a subprocess that SIGKILLs itself at ``kill_at``; it must die that way."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               **{KILL_ENV: kill_at})
    env.pop("OMP_NUM_THREADS", None)   # torch's default count: the command's own setting decides
    proc = subprocess.run([sys.executable, "-m", "letter_fast.cli", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, (f"expected death by SIGKILL at {kill_at}, got rc "
                                                f"{proc.returncode}\n{proc.stderr[-2000:]}")


def run(argv: list[str]) -> None:
    assert cli_main(argv) == 0


def reference_run(argv_for: Callable[[Path], list[str]], tmp_path_factory, name: str) -> Path:
    """The uninterrupted run a module-scoped fixture keeps for its tests to compare against: ``argv_for(out)``, in
    process, the caller at 2 threads (the tests' own runs: 1)."""
    out = tmp_path_factory.mktemp(name) / "reference"
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run(argv_for(out))
        assert torch.get_num_threads() == 2, "the command did not restore its caller's thread count"
    finally:
        torch.set_num_threads(before)
    return out


def assert_rerun_gives_the_same_bytes(argv_for: Callable[[Path], list[str]], reference: Path, tmp_path: Path) -> None:
    run(argv_for(tmp_path / "again"))
    assert_same_files(reference, tmp_path / "again")


def assert_restart_ends_like_reference(argv_for: Callable[[Path], list[str]], reference: Path, tmp_path: Path,
                                       kill_at: str) -> None:
    """Kill a run at ``kill_at``, start the same command again: it must end with the reference's files."""
    out = tmp_path / "killed"
    killed_run(argv_for(out), kill_at)
    run(argv_for(out))
    assert_same_files(reference, out)


@pytest.fixture(autouse=True)
def one_thread():
    # the caller's count differs from the reference's (2): the runs' own `threads` setting must decide
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------------- tokenizer

TOKENIZE = ["tokenize", "--synthetic", "--variant", "letter", "--epochs", "6", "--batch-size", "256",
            "--eval-every", "2", "--checkpoint-every", "2", "--hidden-dims", "64,32", "--latent-dim", "8",
            "--num-levels", "3", "--codebook-size", "32", "--diversity-clusters", "4", "--diversity-min-size", "4",
            "--diversity-max-size", "16", "--curve-every", "1",
            "--no-progress"]   # 1,024 items, 4 steps per epoch, 24 steps; curve.csv gains a row every epoch


def tokenize_argv(out):
    return TOKENIZE + ["--out-dir", str(out)]


@pytest.fixture(scope="module")
def tokenize_reference(tmp_path_factory):
    return reference_run(tokenize_argv, tmp_path_factory, "tok")


def test_tokenize_twice_gives_the_same_bytes(tokenize_reference, tmp_path):
    assert_rerun_gives_the_same_bytes(tokenize_argv, tokenize_reference, tmp_path)
    assert (tokenize_reference / "Synthetic.index.json").exists() and (tokenize_reference / "timing.json").exists()


@pytest.mark.parametrize("kill_at", ["step:11",                  # epoch 3, between the checkpoints of 2 and 4
                                     # half-way through writing the epoch-4 checkpoint, after curve.csv got the
                                     # epoch-4 row: the restart from epoch 2 must drop the rows of 3 and 4 first
                                     "write:tokenizer.ckpt:2"])
def test_tokenize_killed_and_restarted_ends_like_an_uninterrupted_run(tokenize_reference, tmp_path, kill_at):
    out = tmp_path / "killed"
    argv = tokenize_argv(out)
    killed_run(argv, kill_at)
    if kill_at.startswith("write"):
        assert list(out.glob(".tokenizer.ckpt.*.tmp")), "the kill should leave a half-written checkpoint behind"
        assert len((out / "curve.csv").read_text().splitlines()) == 1 + 5, "curve rows of epochs 0-4 written"
    run(argv)
    assert_same_files(tokenize_reference, out)


# ------------------------------------------------------------------------------------------------------ SASRec


@pytest.fixture(scope="module")
def cf_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cf")
    ds = make_synthetic_catalog(num_items=100, num_users=300, num_semantic_clusters=4, num_collab_groups=5,
                                max_length=10, seed=2)
    return ds.save(root / "Syn")


def train_cf_argv(folder, out):
    # 300 users -> 300 windows, 5 steps per epoch; checkpoints after epochs 2 (step 10) and 4 (step 20)
    return ["train-cf", str(folder), "--dim", "8", "--num-blocks", "1", "--max-len", "8", "--batch-size", "64",
            "--epochs", "4", "--checkpoint-every", "2", "--patience", "10", "--out-dir", str(out), "--no-progress"]


@pytest.fixture(scope="module")
def cf_reference(cf_data, tmp_path_factory):
    return reference_run(lambda out: train_cf_argv(cf_data, out), tmp_path_factory, "cfref")


def test_train_cf_twice_gives_the_same_bytes(cf_data, cf_reference, tmp_path):
    assert_rerun_gives_the_same_bytes(lambda out: train_cf_argv(cf_data, out), cf_reference, tmp_path)


@pytest.mark.parametrize("kill_at", ["step:13",                   # epoch 3, after the epoch-2 checkpoint
                                     pytest.param("write:sasrec.ckpt.pt:2",   # inside the epoch-4 checkpoint write
                                                  marks=pytest.mark.slow)])
def test_train_cf_killed_and_restarted_ends_like_an_uninterrupted_run(cf_data, cf_reference, tmp_path, kill_at):
    assert_restart_ends_like_reference(lambda out: train_cf_argv(cf_data, out), cf_reference, tmp_path, kill_at)


# ------------------------------------------------------------------------------------------------------- TIGER


@pytest.fixture(scope="module")
def tiger_data(tmp_path_factory):
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("tiger")
    ds = make_synthetic_catalog(num_items=32, num_users=60, num_semantic_clusters=4, num_collab_groups=4,
                                min_length=5, max_length=9, seed=0)
    folder = ds.save(root / "Syn")
    codes = torch.stack([torch.arange(32) // 8, (torch.arange(32) // 2) % 4, torch.arange(32) % 2], 1)
    write_index_json(root / "syn.index.json", codes)
    return folder, root / "syn.index.json"


def train_tiger_argv(data, out):
    folder, index = data
    # ~200 samples, 7 steps per epoch, validation (and a checkpoint) every 3 steps and at each epoch end
    return ["train-tiger", str(folder), "--index", str(index), "--out-dir", str(out), "--num-layers", "1",
            "--num-decoder-layers", "1", "--d-model", "16", "--d-ff", "32", "--num-heads", "2", "--d-kv", "8",
            "--batch-size", "32", "--lr", "0.005", "--epochs", "2", "--num-beams", "10", "--eval-batch-size", "64",
            "--eval-every-steps", "3", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def tiger_reference(tiger_data, tmp_path_factory):
    return reference_run(lambda out: train_tiger_argv(tiger_data, out), tmp_path_factory, "tigerref")


def test_train_tiger_twice_gives_the_same_bytes(tiger_data, tiger_reference, tmp_path):
    assert_rerun_gives_the_same_bytes(lambda out: train_tiger_argv(tiger_data, out), tiger_reference, tmp_path)
    assert (tiger_reference / "metrics.json").exists() and (tiger_reference / "best.pt").exists()


@pytest.mark.slow    # a subprocess importing transformers: over 10 s on a loaded 2-core machine
@pytest.mark.parametrize("kill_at", ["step:5",                    # between the step-3 and step-6 checkpoints
                                     "write:checkpoint.pt:3"])    # inside the third checkpoint write
def test_train_tiger_killed_and_restarted_ends_like_an_uninterrupted_run(tiger_data, tiger_reference, tmp_path,
                                                                         kill_at):
    assert_restart_ends_like_reference(lambda out: train_tiger_argv(tiger_data, out), tiger_reference, tmp_path,
                                       kill_at)


# ------------------------------------------------------------------------------------------------------ LC-Rec


@pytest.fixture(scope="module")
def lcrec_data(tmp_path_factory):
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from letter_fast.genrec.lcrec.testing import save_tiny_base, tiny_codes, tiny_dataset

    root = tmp_path_factory.mktemp("lcrec")
    save_tiny_base(root / "base", seed=1)
    tiny_dataset(num_users=8).save(root / "Tiny")
    write_index_json(root / "tiny.index.json", tiny_codes())
    return root


def train_lcrec_argv(root, out):
    # 15 examples, 4 micro-batches of 4, 2 steps per epoch (accumulating 2), 2 epochs; validation (and a
    # checkpoint) after every step; LoRA dropout on, so the dropout streams must resume too
    return ["train-lcrec", str(root / "Tiny"), "--index", str(root / "tiny.index.json"), "--model", str(root / "base"),
            "--out-dir", str(out), "--device", "cpu", "--epochs", "2", "--batch-size", "8", "--micro-batch-size", "4",
            "--lr", "0.005", "--num-beams", "10", "--eval-every-steps", "1", "--test-templates", "0,1",
            "--no-progress"]


@pytest.fixture(scope="module")
def lcrec_reference(lcrec_data, tmp_path_factory):
    return reference_run(lambda out: train_lcrec_argv(lcrec_data, out), tmp_path_factory, "lcrecref")


def test_train_lcrec_twice_gives_the_same_bytes(lcrec_data, lcrec_reference, tmp_path):
    assert_rerun_gives_the_same_bytes(lambda out: train_lcrec_argv(lcrec_data, out), lcrec_reference, tmp_path)
    assert (lcrec_reference / "metrics.json").exists() and (lcrec_reference / "best" / "lcrec.json").exists()


@pytest.mark.slow    # a subprocess importing transformers and peft
@pytest.mark.parametrize("kill_at", ["step:3",                    # epoch 2, after the step-2 checkpoint
                                     "write:checkpoint.pt:3",     # inside the step-3 (mid-epoch) checkpoint write
                                     "write:train_settings.toml:1"])   # best/ renamed in, its settings not yet
def test_train_lcrec_killed_and_restarted_ends_like_an_uninterrupted_run(lcrec_data, lcrec_reference, tmp_path,
                                                                         kill_at):
    assert_restart_ends_like_reference(lambda out: train_lcrec_argv(lcrec_data, out), lcrec_reference, tmp_path,
                                       kill_at)


# ---------------------------------------------------------------------------------------------------- pipeline

PIPELINE_SCRIPT = """
import sys
from letter_fast.cf.sasrec import SASRecConfig
from letter_fast.data import make_synthetic_catalog
from letter_fast.genrec.train import TigerTrainConfig
from letter_fast.pipeline import run_pipeline
from letter_fast.tokenizer.config import TokenizeConfig

catalog = make_synthetic_catalog(num_items=64, num_users=80, dim=16, cf_dim=8, num_semantic_clusters=4,
                                 num_collab_groups=4, min_length=5, max_length=8, seed=0)
run_pipeline(catalog, sys.argv[1], progress=False, log=None, sasrec_epochs=2, tokenizer_epochs=4, tiger_max_steps=6,
             tiger_eval_every_steps=3, seed=1, device="cpu",
             sasrec_config=SASRecConfig(batch_size=64, eval_batch_size=64, checkpoint_every=1),
             tokenizer_config=TokenizeConfig(hidden_dims=(16,), latent_dim=8, num_levels=3, codebook_size=16,
                                             diversity_clusters=2, diversity_min_size=4, diversity_max_size=12,
                                             batch_size=32, eval_every=1, checkpoint_every=1),
             tiger_config=TigerTrainConfig(num_layers=1, num_decoder_layers=1, d_model=16, d_ff=32, num_heads=2,
                                           d_kv=8, batch_size=32, num_beams=10, eval_batch_size=64))
"""


def pipeline_run(out: Path, kill_at: str = "", omp_threads: str = "1") -> int:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS=omp_threads)
    env.pop(KILL_ENV, None)
    if kill_at:
        env[KILL_ENV] = kill_at
    proc = subprocess.run([sys.executable, "-c", PIPELINE_SCRIPT, str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if not kill_at:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.returncode


@pytest.fixture(scope="module")
def pipeline_reference(tmp_path_factory):
    pytest.importorskip("transformers")
    out = tmp_path_factory.mktemp("pipe") / "reference"
    pipeline_run(out, omp_threads="2")   # the repeats run at 1: the pipeline's `threads` setting must decide
    return out


@pytest.mark.slow    # three subprocesses importing transformers
def test_pipeline_twice_gives_the_same_bytes(pipeline_reference, tmp_path):
    pipeline_run(tmp_path / "again")
    assert_same_files(pipeline_reference, tmp_path / "again")
    assert (pipeline_reference / "results.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["step:12",                   # inside the tokenizer stage (after SASRec's steps)
                                     "write:checkpoint.pt:2"])    # inside TIGER's second checkpoint write
def test_pipeline_killed_and_restarted_ends_like_an_uninterrupted_run(pipeline_reference, tmp_path, kill_at):
    out = tmp_path / "killed"
    assert pipeline_run(out, kill_at) == -signal.SIGKILL
    pipeline_run(out)
    assert_same_files(pipeline_reference, out)
