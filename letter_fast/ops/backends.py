"""Backend selection shared by every op.

Each op has up to four implementations with the same contract:

``reference``  plain PyTorch, the oracle in tests and the fallback where nothing faster exists
``cpu``        the C++ kernel of ``letter_fast._C`` (OpenMP, SIMD)
``triton``     a Triton kernel (CUDA tensors; CPU tensors only under ``TRITON_INTERPRET=1``)
``cuda``       the CUDA kernel of ``letter_fast._C``

The choice comes from the ``backend=`` argument, else the ``LETTER_FAST_BACKEND`` environment
variable, else ``"auto"``: the fastest one that can run for the tensors at hand. A backend that
is asked for by name and cannot run raises :class:`BackendUnavailable` saying why.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Callable, Mapping, Optional

import torch

from letter_fast import _native

BACKENDS = ("reference", "cpu", "triton", "cuda")
ENV_VAR = "LETTER_FAST_BACKEND"

# Preference of "auto" by device type: fastest first.
_AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}


class BackendUnavailable(RuntimeError):
    """A backend was requested that cannot run for these inputs on this machine."""


_TRITON_ERROR: list = []  # filled on first use (a plain cache: torch.compile traces it cleanly)


def triton_import_error() -> Optional[str]:
    """Why triton cannot be imported (None when it can); computed once."""
    if not _TRITON_ERROR:
        if importlib.util.find_spec("triton") is None:
            _TRITON_ERROR.append("triton is not installed (pip install triton)")
        else:
            try:
                import triton  # noqa: F401
            except Exception as exc:  # a broken install should read as unavailable, not crash
                _TRITON_ERROR.append(f"triton failed to import: {exc}")
            else:
                _TRITON_ERROR.append(None)
    return _TRITON_ERROR[0]


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def generic_reason(backend: str, device: torch.device) -> Optional[str]:
    """Why ``backend`` cannot run on ``device`` at all (None when it can)."""
    if backend == "reference":
        return None
    if backend == "cpu":
        if device.type != "cpu":
            return f"the cpu backend takes CPU tensors, got {device.type} tensors"
        if not _native.has_native():
            return f"the native extension letter_fast._C is not loaded ({_native.LOAD_ERROR})"
        return None
    if backend == "cuda":
        if device.type != "cuda":
            return f"the cuda backend takes CUDA tensors, got {device.type} tensors"
        if not _native.has_native():
            return f"the native extension letter_fast._C is not loaded ({_native.LOAD_ERROR})"
        if not _native.has_native_cuda():
            return "letter_fast._C was built without CUDA kernels (reinstall on a machine with nvcc and a CUDA torch)"
        return None
    if backend == "triton":
        err = triton_import_error()
        if err:
            return err
        if device.type == "cpu" and not triton_interpreting():
            return "Triton runs CPU tensors only in its interpreter (set TRITON_INTERPRET=1 before importing)"
        if device.type not in ("cpu", "cuda"):
            return f"Triton does not run {device.type} tensors"
        return None
    return f"unknown backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}"


def resolve(
    op: str,
    backend: Optional[str],
    device: torch.device,
    limits: Optional[Mapping[str, Callable[[], Optional[str]]]] = None,
) -> str:
    """Pick the backend for one call of ``op``.

    ``limits`` maps a backend name to a callable giving an op-specific reason it cannot take
    these particular inputs (e.g. a width the kernel does not support), or None.
    """
    name = (backend or os.environ.get(ENV_VAR) or "auto").lower()
    limits = limits or {}

    def reason(b: str) -> Optional[str]:
        return generic_reason(b, device) or (limits[b]() if b in limits else None)

    if name == "auto":
        for candidate in _AUTO_ORDER.get(device.type, ("reference",)):
            if reason(candidate) is None:
                return candidate
        return "reference"
    if name not in BACKENDS:
        raise ValueError(f"{op}: unknown backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    why = reason(name)
    if why is not None:
        raise BackendUnavailable(f"{op}: backend {name!r} cannot run here: {why}. Use backend='auto' to fall back.")
    return name


def resolve_cpu_kernel_op(op: str, backend: Optional[str], device: torch.device) -> str:
    """:func:`resolve` for an op with a reference and a ``cpu`` kernel only: GPU tensors take the reference."""
    def no_gpu_kernel() -> str:
        return f"{op} has no GPU kernel; the reference runs on GPUs"

    return resolve(op, backend, device, limits={"cuda": no_gpu_kernel, "triton": no_gpu_kernel})


def available(device: torch.device) -> dict[str, Optional[str]]:
    """Each backend's reason it cannot run on ``device`` (None = runs)."""
    return {b: generic_reason(b, device) for b in BACKENDS}
