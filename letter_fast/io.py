"""File helpers: atomic writes (temporary file + rename), byte-reproducible torch files, tensor/array loading
with clear errors, and the test-only kill point used to prove that interrupted runs resume exactly."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Union

import numpy as np
import torch

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Readers never see a half-written file, and a crash leaves the previous version intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        kill_point("write", Path(tmp), name=path.name)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def remove_partial_writes(folder: PathLike) -> list[Path]:
    """Delete the temporary files that :func:`atomic_path` leaves behind when a process is killed mid-write.

    Only names of the form ``.<file>.<random>.tmp`` are touched; call it only on a folder this process owns
    (a run's output folder), since a concurrent writer's temporary file matches the same pattern.
    """
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def save_torch(obj, path: PathLike) -> Path:
    """``torch.save`` atomically and byte-reproducibly.

    ``torch.save(obj, "name.pt")`` names the records inside the zip archive after the file (``name/data.pkl``),
    so saving to a random temporary name and renaming gives different bytes each time; saving through an open
    file handle names them ``archive/...`` whatever the path, and the same object gives the same bytes.
    """
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    return atomic_write(path, write)


def save_tensor(tensor: torch.Tensor, path: PathLike) -> Path:
    """Save as ``.npy`` (numpy) or anything else as a torch file, atomically."""
    path = Path(path)
    if path.suffix == ".npy":
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, tensor.detach().cpu().numpy())
        return atomic_write(path, write)
    return save_torch(tensor.detach().cpu(), path)


def load_tensor(path: PathLike, what: str = "tensor") -> torch.Tensor:
    """Load a ``.npy`` array or a torch file holding one tensor, with errors that name the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        if path.suffix == ".npy":
            return torch.from_numpy(np.load(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"could not read {what} from {path}: {exc}") from exc
    if isinstance(obj, np.ndarray):
        obj = torch.from_numpy(obj)
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected one tensor ({what})")
    return obj


# ---------------------------------------------------------------------------------------------- test kill point

KILL_ENV = "LETTER_FAST_TEST_KILL_AT"
_kill_counts: dict[str, int] = {}


def kill_point(event: str, partial: Path | None = None, name: str = "") -> None:
    """Test-only: die by a real ``SIGKILL`` at the ``n``-th ``event`` of this process when
    ``LETTER_FAST_TEST_KILL_AT=event:n`` (or ``event:name:n``, counting only events about the file ``name``) is
    set; no effect otherwise (one environment lookup).

    Events: ``write`` (inside :func:`atomic_path`, after the temporary file is written and before the rename; the
    temporary file is first cut to half its length, so the process dies holding a half-written file, as a crash
    inside ``torch.save`` would leave it) and ``step`` (trainers call it after each optimizer step). Nothing is
    flushed or cleaned up: this is what ``kill -9`` does to a run, made reproducible.
    """
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    parts = spec.split(":")
    if parts[0] != event:
        return
    wanted_name, count = (parts[1], parts[2]) if len(parts) == 3 else ("", parts[-1] if len(parts) > 1 else "1")
    if wanted_name and wanted_name != name:
        return
    _kill_counts[spec] = _kill_counts.get(spec, 0) + 1
    if _kill_counts[spec] != int(count):
        return
    if partial is not None and partial.exists():
        size = partial.stat().st_size
        with open(partial, "r+b") as f:
            f.truncate(size // 2)
    os.kill(os.getpid(), signal.SIGKILL)
