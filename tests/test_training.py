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
    cpu_threads,
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


def test_cpu_threads_sets_the_count_for_the_block_and_restores_it():
    before = torch.get_num_threads()
    other = 2 if before == 1 else 1
    with cpu_threads(other) as n:
        assert n == other == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with cpu_threads(0) as n:           # 0: the count as it is
        assert n == before
    with pytest.raises(RuntimeError, match="inside"):
        with cpu_threads(other):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before   # restored on an exception too
    with pytest.raises(ValueError, match="threads must be >= 0"):
        with cpu_threads(-1):
            pass


def test_every_stage_declares_threads_with_one_help_and_one_default():
    from letter_fast.cf.sasrec import SASRecConfig
    from letter_fast.commands.evaluate import EvaluateConfig
    from letter_fast.genrec.lcrec.train import LCRecTrainConfig
    from letter_fast.genrec.train import TigerTrainConfig
    from letter_fast.pipeline import PipelineConfig
    from letter_fast.tokenizer.config import TokenizeConfig

    for cls in (SASRecConfig, TokenizeConfig, TigerTrainConfig, LCRecTrainConfig, EvaluateConfig, PipelineConfig):
        f = {f.name: f for f in dataclasses.fields(cls)}["threads"]
        assert f.default == 1 and f.metadata["help"] == training.THREADS_HELP, cls


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


# ------------------------------------------------------------------------------------------- the loop: fit()


class Toy(training.TrainTask):
    """A regression MLP with dropout (so that the global streams matter) on fixed random data; validation gives
    ``mse`` (sums of squared errors) and a scripted ``score`` when ``scores`` is given."""

    checkpoint_kind, model_kind, version = "toy.checkpoint", "toy.model", 1

    def __init__(self, micro=4, n=30, dropout=0.2, lr=0.05, weighted=True, scores=None, fail_at=0, hidden=8):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 3, generator=g), torch.randn(n, 1, generator=g)
        self.vx, self.vy = torch.randn(10, 3, generator=g), torch.randn(10, 1, generator=g)
        with seeded(1):
            self.model = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.Dropout(dropout),
                                             torch.nn.Linear(hidden, 1))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr)
        self.micro, self.weighted, self.scores, self.fail_at = micro, weighted, scores, fail_at
        self.calls, self.evals, self.snapshots = 0, 0, []

    def batches(self, epoch):
        order = torch.randperm(self.x.shape[0], generator=torch.Generator().manual_seed(100 + epoch))
        return list(order.split(self.micro))

    def train_step(self, model, batch):
        self.calls += 1
        if self.calls == self.fail_at:
            raise Interrupted()
        return torch.nn.functional.mse_loss(model(self.x[batch]), self.y[batch])

    def batch_weight(self, batch):
        return float(len(batch)) if self.weighted else 1.0

    def validate(self):
        with torch.no_grad():
            sums = {"mse": float(((self.model(self.vx) - self.vy) ** 2).sum())}
        if self.scores is not None:
            sums["score"] = self.scores[self.evals] * 10      # 10 examples: the mean is the scripted score
            self.snapshots.append({k: v.clone() for k, v in self.model.state_dict().items()})
        self.evals += 1
        return sums, 10


class Interrupted(Exception):
    pass


def quiet(*a):
    pass


def toy_settings(**kw):
    base = dict(epochs=3, select="mse", mode="min", eval_every_steps=3, progress=False)
    base.update(kw)
    return training.FitSettings(**base)


def files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "timing.json"}


def test_fit_resumed_mid_epoch_ends_with_the_same_bytes(tmp_path):
    training.seed_everything(7)
    straight_task = Toy()
    straight = training.fit(straight_task, toy_settings(), tmp_path / "a", log=quiet)
    assert sorted(files(tmp_path / "a")) == ["best.pt", "checkpoint.pt", "history.json"]
    assert (tmp_path / "a" / "timing.json").exists()
    # 8 steps per epoch; interrupted at step 11 (epoch 1, two steps after the step-9 checkpoint), then twice more
    for fail_at, folder in ((11, "b"), (20, "c")):
        training.seed_everything(7)
        with pytest.raises(Interrupted):
            training.fit(Toy(fail_at=fail_at), toy_settings(), tmp_path / folder, log=quiet)
        training.seed_everything(123)           # whatever the streams are now: the checkpoint restores them
        resumed = training.fit(Toy(), toy_settings(), tmp_path / folder, log=quiet)
        assert files(tmp_path / folder) == files(tmp_path / "a"), folder
        assert resumed.history == straight.history and resumed.stopped == straight.stopped == "epochs done"
    best = load_checkpoint(tmp_path / "a" / "best.pt", "toy.model", 1)["model"]
    for name, value in straight_task.model.state_dict().items():    # fit leaves the best weights in the model
        assert torch.equal(value, best[name])
    assert straight.best_metrics["mse"] == min(h["valid_mse"] for h in straight.history)
    # every 3rd step (counted over the run) inside an epoch, and at each epoch end
    assert [h["step"] for h in straight.history] == [3, 6, 8, 9, 12, 15, 16, 18, 21, 24]
    assert straight.history[2]["epoch"] == 1.0 and straight.history[3]["epoch"] == round(1 + 1 / 8, 4)
    # a finished run started again changes nothing
    again = training.fit(Toy(), toy_settings(), tmp_path / "a", log=quiet)
    assert again.history == straight.history and files(tmp_path / "a") == files(tmp_path / "b")


@pytest.mark.parametrize("n, micro, k", [(32, 2, 4),     # 4 equal micro-batches per step
                                         (31, 3, 3)])    # each epoch's last step: micro-batches of 3 and 1
def test_gradient_accumulation_equals_one_big_batch(n, micro, k):
    big = Toy(micro=micro * k, n=n, dropout=0.0, hidden=1)
    small = Toy(micro=micro, n=n, dropout=0.0, hidden=1)
    settings = dict(epochs=2, eval_every_steps=0)
    a = training.fit(big, toy_settings(**settings), log=quiet)
    b = training.fit(small, toy_settings(accumulate=k, **settings), log=quiet)
    assert a.loop.step == b.loop.step == 8
    for (name, p), q in zip(big.model.named_parameters(), small.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert [h["train_loss"] for h in a.history] == pytest.approx([h["train_loss"] for h in b.history], rel=1e-5)
    # without weights the micro-batch losses are averaged: the same when they are equal-sized, not otherwise
    plain = Toy(micro=micro, n=n, dropout=0.0, hidden=1, weighted=False)
    training.fit(plain, toy_settings(accumulate=k, **settings), log=quiet)
    gap = max(float((p - q).detach().abs().max()) for p, q in zip(big.model.parameters(), plain.model.parameters()))
    assert (gap < 1e-6) == (n % micro == 0), gap


def test_early_stopping_and_best_selection(tmp_path):
    scores = [0.1, 0.3, 0.2, 0.25, 0.2, 0.9]
    task = Toy(scores=scores)
    logged = []
    run = training.fit(task, toy_settings(epochs=10, select="score", mode="max", patience=2), tmp_path,
                       log=logged.append)
    assert run.stopped == "early stopping" and task.evals == 4             # 0.2, 0.25: two without gain
    assert run.best_step == 6 and run.best_metrics["score"] == pytest.approx(0.3)
    assert [h["valid_score"] for h in run.history] == pytest.approx(scores[:4])
    for name, value in task.model.state_dict().items():                   # the weights validated second
        assert torch.equal(value, task.snapshots[1][name])
    best = load_checkpoint(tmp_path / "best.pt", "toy.model", 1)["model"]
    assert all(torch.equal(best[k], task.snapshots[1][k]) for k in best)
    assert "(best)" in logged[1] and "(no gain 2/2)" in logged[3]
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt", "toy.checkpoint", 1)
    assert ckpt["loop"]["stopped"] == "early stopping" and ckpt["best"]["best_step"] == 6
    with pytest.raises(KeyError, match="selection metric 'ndcg'"):
        training.fit(Toy(), toy_settings(select="ndcg"), log=quiet)


def test_budgets():
    steps = training.fit(Toy(), toy_settings(epochs=10, max_steps=5), log=quiet)
    assert steps.stopped == "step budget" and steps.loop.step == 5 and steps.history[-1]["step"] == 5
    assert steps.history[-1]["epoch"] == round(5 / 8, 4)                  # validated where the budget ended
    timed = training.fit(Toy(), toy_settings(epochs=10, time_budget_s=1e-9), log=quiet)
    assert timed.stopped == "time budget" and timed.loop.step == 1 and len(timed.history) == 1
    epochs = training.fit(Toy(), toy_settings(epochs=2, eval_every_steps=0, eval_every_epochs=3), log=quiet)
    assert epochs.stopped == "epochs done" and epochs.loop.step == 16 and epochs.loop.epoch == 2
    assert [h["step"] for h in epochs.history] == [16]                    # the last epoch always validates
    assert epochs.train_samples_per_s > 0
    with pytest.raises(ValueError, match="accumulate must be >= 1"):
        toy_settings(accumulate=0).check()
    with pytest.raises(ValueError, match="mode"):
        toy_settings(mode="best").check()
