"""letter_fast.training: seeding, checkpoint format and its errors, RNG capture, best selection, devices."""

import dataclasses
import random

import numpy as np
import pytest
import torch

from letter_fast import training
from letter_fast.io import remove_partial_writes, save_torch
from letter_fast.training import (
    BestTracker,
    CheckpointError,
    LoopState,
    check_same_settings,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seeded,
    set_rng_state,
)


@dataclasses.dataclass
class Settings:          # module level so that plain torch.save can pickle it (as older checkpoints did)
    a: int = 1


def draws(g=None):
    return (random.random(), float(np.random.rand()), float(torch.rand(1)),
            float(torch.rand(1, generator=g)) if g is not None else None)


def test_rng_state_restores_every_stream():
    g = torch.Generator().manual_seed(5)
    training.seed_everything(3)
    state = rng_state({"g": g})
    first = draws(g)
    set_rng_state(state, {"g": g})
    assert draws(g) == first
    # through a checkpoint file (weights_only=True) as well
    set_rng_state(state, {"g": g})
    with pytest.raises(CheckpointError, match="random generators"):
        set_rng_state(state, {"other": g})


def test_checkpoint_roundtrip_and_reproducible_bytes(tmp_path):
    g = torch.Generator().manual_seed(1)
    state = {"model": {"w": torch.arange(6.0).view(2, 3)}, "history": [{"loss": 0.5}], "cfg": {"dims": (4, 2)},
             "rng": rng_state({"g": g}), "loop": LoopState(epoch=2, step=7).state_dict()}
    save_checkpoint(tmp_path / "a.pt", "thing.checkpoint", 3, state)
    save_checkpoint(tmp_path / "b.pt", "thing.checkpoint", 3, state)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    back = load_checkpoint(tmp_path / "a.pt", "thing.checkpoint", 3)
    assert back["format"] == "letter_fast.thing.checkpoint" and back["version"] == 3
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["loop"]["step"] == 7
    # the same content reached through a loaded copy (other string objects) gives the same bytes
    save_checkpoint(tmp_path / "c.pt", "thing.checkpoint", 3, {k: back[k] for k in state})
    assert (tmp_path / "c.pt").read_bytes() == (tmp_path / "a.pt").read_bytes()


def test_checkpoint_errors_say_what_the_file_is(tmp_path):
    save_checkpoint(tmp_path / "other.pt", "other.model", 1, {"x": 1})
    with pytest.raises(CheckpointError, match="'letter_fast.other.model' file, not letter_fast.thing.checkpoint"):
        load_checkpoint(tmp_path / "other.pt", "thing.checkpoint", 1)
    save_checkpoint(tmp_path / "v1.pt", "thing.checkpoint", 1, {"x": 1})
    with pytest.raises(CheckpointError, match="format version 1; this letter_fast reads version 2"):
        load_checkpoint(tmp_path / "v1.pt", "thing.checkpoint", 2)
    save_torch({"model": {}}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="a dict without a format name"):
        load_checkpoint(tmp_path / "bare.pt", "thing.checkpoint", 1)
    torch.save({"format": "letter_fast.thing.checkpoint", "settings": Settings()}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="could not read checkpoint .*pickled Python objects"):
        load_checkpoint(tmp_path / "pickled.pt", "thing.checkpoint", 1)
    (tmp_path / "cut.pt").write_bytes((tmp_path / "v1.pt").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="could not read checkpoint"):
        load_checkpoint(tmp_path / "cut.pt", "thing.checkpoint", 1)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt", "thing.checkpoint", 1)
    # a payload that weights_only could not load is refused before anything is written
    with pytest.raises(TypeError, match=r"checkpoint\['settings'\] is a Settings"):
        save_checkpoint(tmp_path / "bad.pt", "thing.checkpoint", 1, {"settings": Settings()})
    with pytest.raises(TypeError, match="ndarray"):
        save_checkpoint(tmp_path / "bad.pt", "thing.checkpoint", 1, {"a": [np.zeros(2)]})
    assert not (tmp_path / "bad.pt").exists()


def test_check_same_settings():
    check_same_settings("ck", {"a": 1, "b": (1, 2), "progress": True}, {"a": 1, "b": [1, 2], "progress": False},
                        free=("progress",))
    with pytest.raises(CheckpointError, match=r"other settings \(a, c\)"):
        check_same_settings("ck", {"a": 1, "c": 0}, {"a": 2})


def test_seeded_builds_the_same_model_and_leaves_the_streams_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7):
        a = torch.nn.Linear(4, 4)
    torch.rand(1000)  # whatever ran before must not matter
    with seeded(7):
        b = torch.nn.Linear(4, 4)
    assert torch.equal(a.weight, b.weight)
    torch.manual_seed(123)
    with seeded(7):
        torch.nn.Linear(4, 4)
    assert torch.equal(torch.rand(3), expected_next)


def test_seed_everything_offsets_ranks():
    training.seed_everything(1, rank=0)
    r0 = torch.rand(2)
    training.seed_everything(1, rank=1)
    r1 = torch.rand(2)
    training.seed_everything(1 + training.RANK_STRIDE, rank=0)
    assert not torch.equal(r0, r1) and torch.equal(torch.rand(2), r1)
    assert training.derive_seed(0, "init") == training.derive_seed(0, "init") != training.derive_seed(1, "init")
    assert 0 <= training.derive_seed(2**40, "x", 3) < 2**63


def test_best_tracker():
    best = BestTracker(mode="max", patience=2)
    assert best.update(0.1, 1) and not best.update(0.1, 2) and best.update(0.3, 3)
    assert not best.update(0.2, 4) and not best.should_stop and not best.update(0.2, 5) and best.should_stop
    assert best.best == 0.3 and best.best_step == 3
    low = BestTracker(mode="min")
    assert low.update((0.5, 2.0), 1) and low.update([0.5, 1.0], 2) and not low.update([0.6, 0.0], 3)
    assert low.best == [0.5, 1.0] and not low.should_stop      # patience 0: never stops
    again = BestTracker(mode="max", patience=2)
    again.load_state_dict(best.state_dict())
    assert again.should_stop and again.best_step == 3
    with pytest.raises(ValueError, match="mode"):
        BestTracker(mode="up")


def test_devices_and_single_process():
    assert training.resolve_device("cpu").type == "cpu"
    assert training.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU.*--device cpu"):
            training.resolve_device("cuda")
    dist = training.Distributed("cpu")
    assert dist.main and not dist.enabled and dist.world == 1
    m = torch.nn.Linear(2, 2)
    assert dist.wrap(m) is m
    t = torch.ones(2)
    assert dist.all_reduce_sum(t) is t


def test_remove_partial_writes(tmp_path):
    (tmp_path / ".ck.pt.abc123.tmp").write_bytes(b"half")
    (tmp_path / "keep.pt").write_bytes(b"x")
    removed = remove_partial_writes(tmp_path)
    assert [p.name for p in removed] == [".ck.pt.abc123.tmp"] and (tmp_path / "keep.pt").exists()
