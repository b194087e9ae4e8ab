"""File helpers: atomic writes (temporary file + rename) and tensor/array loading with clear errors."""

from __future__ import annotations

import contextlib
import os
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


def save_tensor(tensor: torch.Tensor, path: PathLike) -> Path:
    """Save as ``.npy`` (numpy) or anything else as a torch file, atomically."""
    path = Path(path)
    if path.suffix == ".npy":
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, tensor.detach().cpu().numpy())
        return atomic_write(path, write)
    return atomic_write(path, lambda tmp: torch.save(tensor.detach().cpu(), tmp))


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
