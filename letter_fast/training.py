"""The training skeleton every trainer uses (tokenizer, SASRec, TIGER, and any added later).

A trainer owns its model, its batches and its loss; everything that makes a run *repeatable* lives here, once:

* **Seeding** (:func:`seed_everything`, :func:`seeded`, :func:`derive_seed`). A run touches four kinds of random
  streams: torch's global generator (dropout, ``nn.init``), numpy's and Python's ``random`` (third-party code),
  and explicit ``torch.Generator`` objects (batch order, negatives). Every one is seeded from the run's ``seed``;
  under torch.distributed rank ``r`` offsets the *global* streams by ``r * RANK_STRIDE`` (dropout differs per
  rank as it should), while generators that decide the data order are shared so every rank draws the same batch
  list. Models are built under :func:`seeded`, so their initial weights depend on the seed and on nothing that
  ran before.
* **Checkpoints** (:func:`save_checkpoint`, :func:`load_checkpoint`): a dict with a ``format`` name
  (``letter_fast.<kind>``) and a ``version``, holding only tensors, dicts, lists, tuples, numbers, strings and
  ``None``, loaded with ``torch.load(..., weights_only=True)`` (no code runs on load). A file of another kind or
  version, or one that is not a checkpoint at all, gives a :class:`CheckpointError` that says what the file is
  and what to do. Saves are atomic and byte-reproducible (``letter_fast.io.save_torch``).
* **Exact resume**: :func:`rng_state` / :func:`set_rng_state` capture and restore every stream above;
  :class:`LoopState` (epoch, position inside the epoch, step, why the run stopped) and :class:`BestTracker`
  (selection of the best checkpoint and early stopping) are saved as plain dicts. A run killed at any point and
  started again with the same command replays from the last checkpoint and ends with the same bytes as an
  uninterrupted run; :func:`check_same_settings` refuses to continue a checkpoint made with other settings.
* **Timings** never enter a checkpoint or a result file: they go to :class:`Timing` (``timing.json``), the one
  file that differs between two identical runs. A wall-clock budget therefore cannot repeat exactly: the trainers
  keep one as an option and default to step / epoch budgets.
* **Device and torch.distributed** (:func:`resolve_device`, :class:`Distributed`) and the **progress bar**
  (:func:`progress_bar`).
* **The loop** (:func:`fit`, :class:`TrainTask`, :class:`FitSettings`): epochs of batches sharded over ranks,
  gradient accumulation and clipping, validation with best-model selection and early stopping, step / epoch / time
  budgets, ``checkpoint.pt`` / ``best.pt`` / ``history.json`` / ``timing.json`` and exact resume, built from the
  pieces above. A trainer supplies its batches, its loss and its validation as a :class:`TrainTask` (TIGER:
  ``letter_fast.genrec.train``). The tokenizer and SASRec keep loops of their own (per-epoch records, a
  checkpoint cadence apart from validation, selection by epoch), built from the same pieces.

Exactness holds on CPU at one thread count: every trainer declares ``threads`` (:data:`THREADS_HELP`, default
1) and runs under :func:`cpu_threads`, so the count is the command's, not the machine's. On CUDA, cuBLAS split-K
reductions, atomics in ``index_add_``/``scatter_add_`` backward and bf16 autocast make runs differ in the last
bits unless ``torch.use_deterministic_algorithms(True)`` and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` are set
(slower); a resumed GPU run then continues the same trajectory up to that noise.

The test-only kill point (``LETTER_FAST_TEST_KILL_AT=step:N`` or ``write:N``, :func:`letter_fast.io.kill_point`)
lets the tests kill a run with a real SIGKILL at a chosen step or inside a chosen file write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pickle
import random
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from letter_fast.io import PathLike, atomic_write, kill_point, remove_partial_writes, save_torch

RANK_STRIDE = 1_000_003        # offset of rank r's global streams: r * RANK_STRIDE (a prime, far from small seeds)


# ------------------------------------------------------------------------------------------------------- seeding


def derive_seed(seed: int, *keys: Union[str, int]) -> int:
    """A 63-bit seed for the stream named ``keys`` of run ``seed`` (stable across processes and platforms).

    Streams derived for different names are independent in practice (SHA-256), unlike ``seed + 1``, ``seed + 2``
    which overlap with the next run's seed.
    """
    text = "/".join([str(int(seed))] + [str(k) for k in keys])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed torch's global CPU and CUDA generators, numpy's and Python's ``random`` for this process.

    Rank ``r`` of a torch.distributed run uses ``seed + r * RANK_STRIDE``, so dropout masks differ per rank.
    """
    value = int(seed) + int(rank) * RANK_STRIDE
    random.seed(value)
    np.random.seed(value % 2 ** 32)
    torch.manual_seed(value)          # also seeds every CUDA device


THREADS_HELP = ("torch CPU threads while training and evaluating (0 = torch's default: every core). CPU sums "
                "split their work by thread count, so results agree to the last bit only at one count: a fixed count "
                "makes the same command give the same files on any machine of one CPU kind; more threads are faster "
                "on a large idle CPU. CUDA results do not depend on it")


@contextlib.contextmanager
def cpu_threads(threads: int) -> Iterator[int]:
    """Run the block with torch's intra-op CPU thread count set to ``threads`` (0: as it is); restore it after.

    Why a setting and not the machine's default: reductions on the CPU (matrix products, sums over a batch) cut
    their work into one part per thread and add the parts in that order, so the same seeded run gives other last
    bits, and after a few hundred epochs other identifiers, at another thread count. Each trainer declares
    ``threads`` (help text :data:`THREADS_HELP`) and runs under this block; restoring the count afterwards keeps a
    library call from changing the rest of its caller's process. Yields the count in effect.
    """
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = torch's default), got {threads}")
    before = torch.get_num_threads()
    if threads and threads != before:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with every global stream seeded by ``seed``, then restore them as they were.

    Used to build models: their initial weights then depend on the seed only, not on what ran before, and
    building one does not move the streams the training loop uses.
    """
    saved = rng_state()
    seed_everything(seed)
    try:
        yield
    finally:
        set_rng_state(saved)


def rng_state(generators: Optional[Mapping[str, torch.Generator]] = None) -> dict:
    """Every random stream of this process (+ the named ``generators``) as checkpoint-safe plain data."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached": float(cached)},
        "python": [int(version), list(internal), gauss],
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return state


def set_rng_state(state: Mapping, generators: Optional[Mapping[str, torch.Generator]] = None) -> None:
    """Restore what :func:`rng_state` captured (the named ``generators`` must be the same set)."""
    torch.set_rng_state(state["torch"])
    for i, s in enumerate(state.get("cuda") or []):
        if i < torch.cuda.device_count():
            torch.cuda.set_rng_state(s, i)
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state.get("generators", {})
    wanted = dict(generators or {})
    if set(saved) != set(wanted):
        raise CheckpointError(f"the checkpoint holds the random generators {sorted(saved)}, this trainer uses "
                              f"{sorted(wanted)}: it was written by another version of the trainer; start afresh "
                              "(--no-resume) or use another output folder")
    for name, g in wanted.items():
        g.set_state(saved[name])


# --------------------------------------------------------------------------------------------------- checkpoints


class CheckpointError(ValueError):
    """A file that is not the checkpoint the caller expects (another kind, another version, unreadable)."""


def save_checkpoint(path: PathLike, kind: str, version: int, state: Mapping[str, Any]) -> Path:
    """Write ``state`` as a ``letter_fast.<kind>`` checkpoint of format ``version`` (atomic, reproducible bytes).

    ``state`` may hold tensors, dicts, lists, tuples, numbers, strings, booleans and ``None`` only (what
    ``weights_only=True`` loads); anything else raises ``TypeError`` naming the key, before anything is written.
    """
    payload = {"format": f"letter_fast.{kind}", "version": int(version), **state}
    _check_plain(payload, "checkpoint")
    return save_torch(_canonical(payload), path)


def load_checkpoint(path: PathLike, kinds: Union[str, Sequence[str]], version: int,
                    map_location: Union[str, torch.device] = "cpu", what: str = "") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` as one of ``kinds``, format ``version``.

    Raises ``FileNotFoundError`` when ``path`` is missing and :class:`CheckpointError` (a ``ValueError``) when the
    file cannot be read, is of another kind, or of another version, with what the file is and what to do.
    ``what`` names the expected file for people (``"TIGER checkpoint"``).
    """
    path = Path(path)
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    expected = " or ".join(f"letter_fast.{k}" for k in kinds)
    if what:
        expected = f"a letter_fast {what} ({expected})"
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError,
            AttributeError) as exc:
        raise CheckpointError(
            f"could not read checkpoint {path} as {expected} ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
            "It is truncated, not a checkpoint, or was written by a letter_fast release that pickled Python objects "
            "(those need weights_only=False, which runs code from the file): delete it and train again, or pass "
            "--no-resume / another output folder") from exc
    found = state.get("format") if isinstance(state, dict) else None
    if not isinstance(found, str) or found.split("/")[0] not in {f"letter_fast.{k}" for k in kinds}:
        kind_found = f"a {found!r} file" if isinstance(found, str) else \
            f"a {type(state).__name__}" + (" without a format name" if isinstance(state, dict) else "")
        older = " (letter_fast releases before format names wrote such files: train again)" \
            if isinstance(state, dict) and found is None else ""
        raise CheckpointError(f"{path} is {kind_found}, not {expected}{older}: pass the right file, or delete it / "
                              "pass --no-resume to start afresh")
    got = state.get("version", found.partition("/")[2] or None)
    if str(got) != str(version):
        raise CheckpointError(f"{path} is {found} format version {got}; this letter_fast reads version {version}. "
                              "Use the letter_fast release that wrote it, or train again (--no-resume)")
    return state


def check_same_settings(path: PathLike, saved: Mapping, current: Mapping, free: Iterable[str] = ()) -> None:
    """Refuse to resume ``path`` when a setting outside ``free`` (those that only change how a run is watched)
    differs: the result would be no continuation of either run."""
    free = set(free)
    changed = sorted(k for k in set(saved) | set(current) if k not in free and _plain(saved.get(k)) !=
                     _plain(current.get(k)))
    if changed:
        raise CheckpointError(f"{path} was written with other settings ({', '.join(changed)}); use another output "
                              "folder or start afresh (--no-resume)")


def _canonical(obj):
    """``obj`` rebuilt with every string interned.

    Pickle writes an object it has seen before as a back-reference, so the bytes depend on object *identity*:
    a resumed run whose history keys come from the loaded checkpoint (one string object per key) and whose new
    records use the code's literals (another object) would pickle differently from an uninterrupted run where
    every key is the same literal. Interning makes equal strings one object, whatever their origin.
    """
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_canonical(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_canonical(v) for v in obj)
    return obj


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


_PLAIN = (bool, int, float, str, type(None), torch.Tensor)


def _check_plain(obj, where: str) -> None:
    if isinstance(obj, _PLAIN):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}; checkpoints take str/int keys")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(obj).__name__}: checkpoints hold tensors, dicts, lists, numbers and strings "
                    "only (loaded with weights_only=True); convert it (dataclasses.asdict, tensor.tolist())")


# ------------------------------------------------------------------------------------------- loop state, best


@dataclass
class LoopState:
    """Where a run is: ``epoch`` (completed epochs), ``batch_in_epoch`` (batches of the current epoch done),
    ``step`` (optimizer steps), ``stopped`` (why it ended; empty while running)."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    stopped: str = ""

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: Mapping) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, state[f.name])

    def after_step(self, batch_index: int) -> None:
        """Count one optimizer step (batch ``batch_index`` of the epoch done); the test kill point ``step``."""
        self.step += 1
        self.batch_in_epoch = batch_index + 1
        kill_point("step")

    def end_epoch(self) -> None:
        self.epoch += 1
        self.batch_in_epoch = 0


@dataclass
class BestTracker:
    """Selection of the best checkpoint and early stopping.

    ``update(score, step)`` records an evaluation: with ``mode="max"`` a strictly higher score is better, with
    ``"min"`` a strictly lower one (scores may be tuples, compared lexicographically: the tokenizer's
    ``(collision rate, loss)``). ``should_stop`` once ``patience`` evaluations in a row brought nothing better
    (``patience=0``: never).
    """

    mode: str = "max"
    patience: int = 0
    best: Optional[Any] = None
    best_step: int = -1
    bad_evals: int = 0
    best_info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")

    def is_better(self, score) -> bool:
        if self.best is None:
            return True
        score, best = _plain(score), _plain(self.best)
        return score > best if self.mode == "max" else score < best

    def update(self, score, step: int, **info) -> bool:
        """Record an evaluation; True when it is the new best."""
        if self.is_better(score):
            self.best, self.best_step, self.bad_evals, self.best_info = _plain(score), step, 0, dict(info)
            return True
        self.bad_evals += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_evals >= self.patience

    def state_dict(self) -> dict:
        return {"mode": self.mode, "best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals,
                "best_info": self.best_info}

    def load_state_dict(self, state: Mapping) -> None:
        self.best, self.best_step = state["best"], state["best_step"]
        self.bad_evals, self.best_info = state["bad_evals"], dict(state["best_info"])


class Timing:
    """Seconds and sample counts of a run, in ``<out_dir>/timing.json`` (the file that may differ between two
    identical runs; nothing else a trainer writes does). Loaded on resume so totals cover every part of a run."""

    def __init__(self, path: Optional[PathLike] = None, resume: bool = True):
        self.path = Path(path) if path is not None else None
        self.values: dict[str, float] = {}
        if self.path is not None and resume and self.path.exists():
            try:
                self.values = {k: float(v) for k, v in json.loads(self.path.read_text()).items()
                               if isinstance(v, (int, float))}
            except (ValueError, AttributeError):
                self.values = {}       # a damaged timing file only loses timings

    def add(self, key: str, value: float) -> None:
        self.values[key] = self.values.get(key, 0.0) + float(value)

    def get(self, key: str, default: float = 0.0) -> float:
        return self.values.get(key, default)

    def set(self, key: str, value: float) -> None:
        self.values[key] = float(value)

    def write(self) -> None:
        if self.path is not None:
            atomic_write(self.path, lambda tmp: tmp.write_text(json.dumps(self.values, indent=1, sort_keys=True)))


def prepare_out_dir(out_dir: Optional[PathLike], main: bool = True) -> Optional[Path]:
    """Create ``out_dir`` and remove the temporary files of writes a killed run left half done."""
    if out_dir is None:
        return None
    out_dir = Path(out_dir)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_partial_writes(out_dir)
    return out_dir


def state_dict_cpu(module: torch.nn.Module) -> dict:
    """A detached CPU copy of ``module``'s parameters and buffers (what a best-model snapshot keeps)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------------------- device, distributed


def resolve_device(name: Union[str, torch.device]) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; any other name as ``torch.device`` (CUDA checked to exist)."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(name)!r} requested but no CUDA GPU is available here; use --device cpu")
    return device


class Distributed:
    """The torchrun context: ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` from the environment (one process when unset).

    With ``WORLD_SIZE > 1`` the process group is initialized (NCCL on CUDA, gloo on CPU) and each rank takes GPU
    ``LOCAL_RANK``. ``main`` is rank 0, the one that writes files.
    """

    def __init__(self, device_name: Union[str, torch.device] = "auto"):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world > 1
        device = resolve_device(device_name)
        if self.enabled:
            import torch.distributed as dist

            if device.type == "cuda":
                device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(device)
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        self.device = device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in DistributedDataParallel under torchrun, else itself."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)


# ------------------------------------------------------------------------------------------------- the loop


@dataclass
class FitSettings:
    """How :func:`fit` runs the loop (the trainer maps its own settings onto these).

    ``epochs``: at most this many passes over :meth:`TrainTask.batches`. ``max_steps`` / ``time_budget_s``: stop
    after this many optimizer steps / seconds of training steps (0 = no limit; the seconds cover every part of a
    resumed run and never repeat exactly). ``select`` names the metric of :meth:`TrainTask.validate` that picks the
    best model, ``mode`` whether higher (``"max"``) or lower is better; ``patience`` validations without a better
    one stop the run (0 = never). Validation runs after every ``eval_every_epochs``-th epoch and after the last,
    every ``eval_every_steps`` steps inside an epoch (0 = never) and when a budget ends the run.
    ``accumulate``: micro-batches per optimizer step (the effective batch is ``accumulate`` times a micro-batch, per
    rank). ``grad_clip``: maximum gradient norm (0 = no clipping). ``count_name``: the history key of the number of
    validation examples; ``log_metrics``: the metrics each validation's log line shows (default: ``select``).
    """

    epochs: int
    select: str
    mode: str = "max"
    patience: int = 0
    max_steps: int = 0
    time_budget_s: float = 0.0
    eval_every_epochs: int = 1
    eval_every_steps: int = 0
    accumulate: int = 1
    grad_clip: float = 0.0
    progress: bool = True
    count_name: str = "valid_examples"
    log_metrics: Sequence[str] = ()

    def check(self) -> FitSettings:
        for name in ("epochs", "eval_every_epochs", "accumulate"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("patience", "max_steps", "time_budget_s", "eval_every_steps", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")
        return self


class TrainTask:
    """What a trainer gives :func:`fit`: its model, optimizer, batches, loss and validation (see :func:`fit`).

    Subclasses set ``model`` (the unwrapped module), ``optimizer``, optionally ``scheduler`` (stepped once per
    optimizer step) and the class attributes ``checkpoint_kind`` / ``model_kind`` / ``version`` (file formats of
    ``checkpoint.pt`` and ``best.pt``), and implement :meth:`batches`, :meth:`train_step` and :meth:`validate`.
    The other methods have defaults that fit a plain ``nn.Module``.
    """

    checkpoint_kind: str = ""
    model_kind: str = ""
    version: int = 1
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Optional[Any] = None

    # --- required
    def batches(self, epoch: int) -> Sequence[Any]:
        """Every (micro-)batch of epoch ``epoch``, in order: the same list on every rank (fit shards it) and the same
        list when called again for that epoch after a resume (draw it from a generator seeded by ``epoch``, or from
        a generator in :meth:`generators` when checkpoints fall only on epoch ends)."""
        raise NotImplementedError

    def train_step(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        """The scalar loss of ``batch`` (a mean over it), computed with ``model`` (the DDP-wrapped module under
        torch.distributed, ``self.model`` otherwise). Forward only: fit does backward, clipping and the step."""
        raise NotImplementedError

    def validate(self) -> tuple[Mapping[str, float], int]:
        """``(sums, count)`` over this rank's share of the validation examples (the shares of the ranks are disjoint
        and together cover the set): ``sums[name]`` the sum of metric ``name`` over ``count`` examples. fit sums
        both over ranks and divides. Runs with the model in eval mode (fit switches it back to train mode after);
        it may draw from the random streams (the checkpoint that follows a validation holds their state after it).
        Use ``self.model``, not the DDP wrapper: ranks validate different examples."""
        raise NotImplementedError

    # --- optional
    def batch_weight(self, batch: Any) -> float:
        """Weight of a micro-batch's loss in its optimizer step under gradient accumulation: the step minimizes
        ``sum_i w_i loss_i / sum_i w_i``. The number of samples (or target tokens) of ``batch`` makes ``k``
        micro-batches equal one batch of their union; the default 1.0 averages the micro-batch losses."""
        return 1.0

    def batch_samples(self, batch: Any) -> int:
        """Samples in ``batch`` (for the samples/s in timing.json)."""
        return len(batch)

    def weights(self) -> dict:
        """The trained weights (``checkpoint.pt`` / ``best.pt`` key ``model``; the best-model snapshot). An LLM with
        LoRA returns the adapter weights only."""
        return self.model.state_dict()

    def load_weights(self, state: Mapping) -> None:
        self.model.load_state_dict(state)

    def payload(self) -> dict:
        """What ``best.pt`` holds and ``checkpoint.pt`` starts with: ``{"model": self.weights(), ...}`` plus what a
        loader needs to rebuild the model (vocabulary, settings). Checkpoint-safe values only."""
        return {"model": self.weights()}

    def check_resume(self, path: Path, checkpoint: Mapping) -> None:
        """Raise :class:`CheckpointError` when ``checkpoint`` (read from ``path``) was made with other settings
        (:func:`check_same_settings`)."""

    def generators(self) -> dict[str, torch.Generator]:
        """Named generators whose state the checkpoint carries (beside the global streams, saved per rank)."""
        return {}

    def extra_state(self) -> dict:
        """More checkpoint-safe state to save (appended to ``checkpoint.pt``); given back to
        :meth:`load_extra_state` on resume."""
        return {}

    def load_extra_state(self, checkpoint: Mapping) -> None:
        """Restore what :meth:`extra_state` saved (``checkpoint`` is the whole loaded checkpoint)."""


@dataclass
class FitResult:
    """What :func:`fit` returns. The task's model holds the best weights (eval mode) when a validation ran."""

    history: list
    best_metrics: dict
    best_step: int
    stopped: str                 # "epochs done", "early stopping", "step budget", "time budget"
    loop: LoopState
    train_samples_per_s: float


def fit(task: TrainTask, settings: FitSettings, out_dir: Optional[PathLike] = None, *,
        dist: Optional[Distributed] = None, resume: bool = True, log=print) -> FitResult:
    """The training loop of every step-based trainer: epochs of (micro-)batches, validation, best-model selection,
    early stopping, budgets, exact resume and torch.distributed.

    **Files** (rank 0, when ``out_dir`` is given): ``checkpoint.pt`` (``task.checkpoint_kind``: the payload,
    ``optimizer``, ``scheduler``, ``loop``, ``best``, ``history``, ``rng`` = every rank's random streams, then
    :meth:`TrainTask.extra_state`), written after every validation, after every epoch and at the end;
    ``best.pt`` (``task.model_kind``: :meth:`TrainTask.payload`) at every new best; ``history.json`` (one record per
    validation: ``epoch`` (fractional inside an epoch), ``step``, ``train_loss`` (mean step loss since the last
    validation, averaged over ranks), ``lr``, ``count_name``, ``valid_<metric>``); ``timing.json``
    (``train_seconds``, ``eval_seconds``, ``train_samples``, ``train_samples_per_s``: the only file that differs
    between identical runs). With ``resume`` an existing ``checkpoint.pt`` is continued (after
    :meth:`TrainTask.check_resume`), the best snapshot re-read from ``best.pt``.

    **One optimizer step** takes the next ``settings.accumulate`` micro-batches of this rank's share of the epoch
    (fewer at the end of an epoch): for each, ``loss_i = task.train_step(ddp_model, batch)`` and backward of
    ``loss_i * w_i / sum(w)`` (``w_i`` = :meth:`TrainTask.batch_weight`; no scaling when one micro-batch makes the
    step), gradients synchronized across ranks only on the last; then clipping to ``settings.grad_clip``,
    ``optimizer.step()``, ``scheduler.step()``. ``optimizer.zero_grad(set_to_none=True)`` precedes the first
    backward.

    **Sharding**: every rank calls ``task.batches(epoch)`` (the same list), drops the last ``len % world`` batches
    and takes every ``world``-th from its rank on, so every rank makes the same number of steps; the model is
    wrapped in DistributedDataParallel; validation sums and counts are all-reduced; a time budget stops every rank
    at the same step; only rank 0 writes and logs.

    **Repeatable** (CPU, fixed thread count, no time budget): the same task and settings give the same bytes in
    every file but ``timing.json``, and a run killed at any point (``kill -9``, also inside a file write) and started
    again ends with the same bytes, provided the task keeps its side of the contract: ``batches(epoch)`` is a pure
    function of ``epoch`` and checkpointed state, every random draw comes from the global streams or from
    :meth:`TrainTask.generators`, and whatever else changes during training is in :meth:`TrainTask.extra_state`.
    The caller seeds the global streams (:func:`seed_everything`) and builds the model before calling fit; on resume
    fit restores the streams of the checkpoint. Settings that only change how a run is watched (``patience``,
    ``time_budget_s``, ``progress``) may differ on resume; the task's :meth:`TrainTask.check_resume` refuses others.
    """
    settings.check()
    dist = dist or Distributed("cpu")
    device = dist.device
    model = task.model
    generators = task.generators()
    out_dir = prepare_out_dir(out_dir, main=dist.main)
    ckpt_path = out_dir / "checkpoint.pt" if out_dir else None
    resuming = bool(resume and ckpt_path is not None and ckpt_path.exists())
    # timings continue only with the checkpoint they belong to (a fresh start also starts the time budget afresh)
    timing = Timing(out_dir / "timing.json" if out_dir is not None and dist.main else None, resume=resuming)
    loop = LoopState()
    best = BestTracker(mode=settings.mode, patience=settings.patience)
    history: list = []
    best_weights = None
    if resuming:
        ckpt = load_checkpoint(ckpt_path, task.checkpoint_kind, task.version)
        task.check_resume(ckpt_path, ckpt)
        task.load_weights(ckpt["model"])
        task.optimizer.load_state_dict(ckpt["optimizer"])
        if task.scheduler is not None:
            task.scheduler.load_state_dict(ckpt["scheduler"])
        loop.load_state_dict(ckpt["loop"])
        best.load_state_dict(ckpt["best"])          # patience stays the current one (a free setting)
        history = list(ckpt["history"])
        set_rng_state(ckpt["rng"][dist.rank] if dist.rank < len(ckpt["rng"]) else ckpt["rng"][0], generators)
        task.load_extra_state(ckpt)
        if (out_dir / "best.pt").exists():
            best_weights = load_checkpoint(out_dir / "best.pt", task.model_kind, task.version)["model"]
        if dist.main:
            log(f"resumed from {ckpt_path} at epoch {loop.epoch} step {loop.step}")
    ddp_model = dist.wrap(model)

    def lr() -> float:
        return task.scheduler.get_last_lr()[0] if task.scheduler is not None else task.optimizer.param_groups[0]["lr"]

    def gather_rng() -> list:
        """Every rank's random streams (rank 0 writes them all, so each rank resumes its own dropout)."""
        mine = rng_state(generators)
        if not dist.enabled:
            return [mine]
        import torch.distributed as tdist

        every = [None] * dist.world
        tdist.all_gather_object(every, mine)
        return every

    def save_files(with_best: bool) -> None:
        rngs = gather_rng() if out_dir else None
        if not (dist.main and out_dir):
            return
        payload = task.payload()
        if with_best:
            save_checkpoint(out_dir / "best.pt", task.model_kind, task.version, payload)
        state = dict(payload, optimizer=task.optimizer.state_dict())
        if task.scheduler is not None:
            state["scheduler"] = task.scheduler.state_dict()
        state.update(loop=loop.state_dict(), best=best.state_dict(), history=history, rng=rngs, **task.extra_state())
        save_checkpoint(ckpt_path, task.checkpoint_kind, task.version, state)
        atomic_write(out_dir / "history.json", lambda tmp: tmp.write_text(json.dumps(history, indent=1)))
        timing.write()

    def validate(epoch_float: float, train_loss: float) -> bool:
        """Evaluate, record, checkpoint; True when early stopping says stop."""
        nonlocal best_weights
        t0 = time.perf_counter()
        model.eval()
        sums, count = task.validate()
        model.train()
        keys = sorted(sums)
        totals = dist.all_reduce_sum(torch.tensor([count, train_loss] + [sums[k] for k in keys], dtype=torch.float64))
        train_loss = float(totals[1]) / dist.world       # mean over ranks
        totals = torch.cat([totals[:1], totals[2:]])
        metrics = {k: float(totals[i + 1] / max(totals[0].item(), 1)) for i, k in enumerate(keys)}
        if settings.select not in metrics:
            raise KeyError(f"validation gave the metrics {keys}, not the selection metric {settings.select!r}")
        improved = best.update(metrics[settings.select], loop.step, metrics=metrics)
        if improved:
            best_weights = {k: v.detach().to("cpu", copy=True) for k, v in task.weights().items()}
        history.append({"epoch": round(epoch_float, 4), "step": loop.step, "train_loss": train_loss, "lr": lr(),
                        settings.count_name: int(totals[0]), **{f"valid_{k}": v for k, v in metrics.items()}})
        timing.add("eval_seconds", time.perf_counter() - t0)
        if dist.main:
            shown = settings.log_metrics or (settings.select,)
            log(f"epoch {epoch_float:.2f} step {loop.step}: loss {train_loss:.4f}  valid "
                + "  ".join(f"{k} {metrics[k]:.4f}" for k in shown)
                + ("  (best)" if improved else f"  (no gain {best.bad_evals}/{settings.patience})"))
        save_files(with_best=improved)
        return best.should_stop

    k = settings.accumulate
    model.train()
    stop = bool(loop.stopped)
    while not stop and loop.epoch < settings.epochs:
        epoch = loop.epoch
        batches = list(task.batches(epoch))
        if dist.enabled:   # equal step counts on every rank
            batches = batches[: len(batches) - len(batches) % dist.world][dist.rank::dist.world]
        starts = range(loop.batch_in_epoch, len(batches), k)
        bar = progress_bar(starts, enabled=settings.progress and dist.main, desc=f"epoch {epoch}", unit="step",
                           leave=False)
        loss_sum, loss_n = 0.0, 0
        for start in starts:
            t0 = time.perf_counter()
            group = batches[start:start + k]
            last = start + len(group) - 1
            weights = [float(task.batch_weight(b)) for b in group] if len(group) > 1 else [1.0]
            total_weight = sum(weights)
            step_loss = None
            for i, batch in enumerate(group):
                sync = i + 1 == len(group) or not dist.enabled
                with contextlib.nullcontext() if sync else ddp_model.no_sync():
                    loss = task.train_step(ddp_model, batch)
                    if i == 0:
                        task.optimizer.zero_grad(set_to_none=True)
                    if len(group) > 1:
                        loss = loss * (weights[i] / total_weight)
                    loss.backward()
                step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
                timing.add("train_samples", task.batch_samples(batch) * dist.world)
            if settings.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            task.optimizer.step()
            if task.scheduler is not None:
                task.scheduler.step()
            loss_sum, loss_n = loss_sum + step_loss.float(), loss_n + 1   # no device sync per step
            if device.type == "cuda" and (loop.step + 1) % 50 == 0:
                torch.cuda.synchronize()     # keep the step timer honest without syncing every step
            timing.add("train_seconds", time.perf_counter() - t0)
            loop.after_step(last)
            bar.update(1)
            if loop.step % 20 == 0:
                bar.set_postfix(loss=f"{float(step_loss):.3f}", lr=f"{lr():.2e}")
            out_of_steps = bool(settings.max_steps and loop.step >= settings.max_steps)
            out_of_time = bool(settings.time_budget_s and timing.get("train_seconds") >= settings.time_budget_s)
            if dist.enabled and settings.time_budget_s:    # every rank must stop at the same step
                out_of_time = bool(dist.all_reduce_sum(torch.tensor([float(out_of_time)]))[0] > 0)
            out_of_budget = out_of_steps or out_of_time
            if out_of_budget or (settings.eval_every_steps and loop.step % settings.eval_every_steps == 0
                                 and last + 1 < len(batches)):
                if out_of_budget:   # recorded before the validation writes the checkpoint
                    loop.stopped = "step budget" if out_of_steps else "time budget"
                stop = validate(epoch + (last + 1) / len(batches), float(loss_sum) / loss_n)
                loss_sum, loss_n = 0.0, 0
                if out_of_budget:
                    stop = True
                if stop:
                    break
        bar.close()
        if stop:
            break
        loop.end_epoch()
        if (epoch + 1) % settings.eval_every_epochs == 0 or epoch + 1 == settings.epochs:
            stop = validate(float(epoch + 1), float(loss_sum) / max(loss_n, 1))
        else:
            save_files(with_best=False)
    if not loop.stopped:
        loop.stopped = "early stopping" if stop else "epochs done"
    save_files(with_best=False)
    dist.barrier()
    if best_weights is not None:
        task.load_weights(best_weights)
    model.eval()
    seconds = timing.get("train_seconds")
    rate = timing.get("train_samples") / seconds if seconds else float("nan")
    if dist.main and out_dir is not None:
        timing.set("train_samples_per_s", rate)
        timing.write()
    return FitResult(history=history, best_metrics=dict(best.best_info.get("metrics", {})), best_step=best.best_step,
                     stopped=loop.stopped, loop=loop, train_samples_per_s=rate)


# ----------------------------------------------------------------------------------------------------- progress


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """A tqdm bar (stderr), or a silent one when ``enabled`` is false; same API either way."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not enabled, dynamic_ncols=True, **kwargs)


__all__ = ["RANK_STRIDE", "derive_seed", "seed_everything", "THREADS_HELP", "cpu_threads", "seeded", "rng_state",
           "set_rng_state", "CheckpointError", "save_checkpoint", "load_checkpoint", "check_same_settings",
           "LoopState", "BestTracker", "Timing", "prepare_out_dir", "state_dict_cpu", "resolve_device", "Distributed",
           "progress_bar", "FitSettings", "TrainTask", "FitResult", "fit"]
