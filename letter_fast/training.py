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

Exactness holds on CPU with a fixed thread count. On CUDA, cuBLAS split-K reductions, atomics in
``index_add_``/``scatter_add_`` backward and bf16 autocast make runs differ in the last bits unless
``torch.use_deterministic_algorithms(True)`` and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` are set (slower); a resumed
GPU run then continues the same trajectory up to that noise.

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


# ----------------------------------------------------------------------------------------------------- progress


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """A tqdm bar (stderr), or a silent one when ``enabled`` is false; same API either way."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not enabled, dynamic_ncols=True, **kwargs)


__all__ = ["RANK_STRIDE", "derive_seed", "seed_everything", "seeded", "rng_state", "set_rng_state",
           "CheckpointError", "save_checkpoint", "load_checkpoint", "check_same_settings", "LoopState", "BestTracker",
           "Timing", "prepare_out_dir", "state_dict_cpu", "resolve_device", "Distributed", "progress_bar"]
