"""The one place that chooses a backend, from one table of which backends every op has.

Each op has up to four implementations with the same contract:

``reference``  plain PyTorch, the oracle in tests and the fallback where nothing faster exists
``cpu``        the C++ kernel of ``letter_fast._C`` (OpenMP, SIMD)
``triton``     a Triton kernel (CUDA tensors; CPU tensors only under ``TRITON_INTERPRET=1``)
``cuda``       the CUDA kernel of ``letter_fast._C``

:data:`OPS` says, per op, which of them exist, which native op each compiled one needs, the
limits a kernel puts on its inputs (a width held in registers, a key that must fit 63 bits) and
which ones are not deterministic. Every entry point calls :func:`resolve` with the op's name, the
``backend=`` it was given and the facts the limits look at; nothing else picks a backend.

The choice is the ``backend=`` argument, else the ``LETTER_FAST_BACKEND`` environment variable,
else ``"auto"``: the fastest backend of the op that can run for the tensors at hand. A backend
asked for by name (argument or environment) that cannot run raises :class:`BackendUnavailable`
saying why; nothing falls back silently. ``python -m letter_fast.info`` prints the table.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import torch

from letter_fast import _native

BACKENDS = ("reference", "cpu", "triton", "cuda")
ENV_VAR = "LETTER_FAST_BACKEND"

# Preference of "auto" by device type, fastest first; each op keeps the ones it has.
_AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}

Limit = Callable[[Mapping], Optional[str]]
_DEVICE_OF = {"cpu": "cpu", "cuda": "cuda"}  # backends bound to one device type


class BackendUnavailable(RuntimeError):
    """A backend was requested that cannot run for these inputs on this machine."""


@dataclass(frozen=True)
class OpSpec:
    """One row of the backend table.

    ``backends``: the implementations that exist. ``native``: the ``torch.ops.letter_fast`` op a
    compiled backend calls (absent from an extension built before the op existed).
    ``limits``: per backend, a function of the call's facts giving why it cannot take them (or
    None). ``nondeterministic``: per backend, why two identical calls may differ in the last bits.
    """

    backends: tuple[str, ...]
    native: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, Limit] = field(default_factory=dict)
    nondeterministic: Mapping[str, str] = field(default_factory=dict)


def _max_dim(name: str, limit: int, float64_ok: bool = True) -> Limit:
    """The width limit of a kernel that holds rows in registers (and, for GPU kernels, float32 math)."""
    def reason(facts: Mapping) -> Optional[str]:
        if not float64_ok and facts.get("dtype") == torch.float64:
            return "float64 inputs run on the reference and cpu backends only"
        d = facts.get("d")
        if d is not None and d > limit:
            return f"d={d} exceeds the {name} kernels' register budget of {limit}"
        return None
    return reason


def _trie_step_triton(facts: Mapping) -> Optional[str]:
    keys = facts.get("keys")
    if keys is not None and keys > TRIE_TRITON_MAX_KEYS:
        return f"{keys} candidate keys per query exceed the Triton kernel's {TRIE_TRITON_MAX_KEYS}"
    return None


def _trie_step_cuda(facts: Mapping) -> Optional[str]:
    k = facts.get("k")
    return f"k={k} exceeds {TRIE_CUDA_MAX_K}" if k is not None and k > TRIE_CUDA_MAX_K else None


def _trie_build_cpu(facts: Mapping) -> Optional[str]:
    if facts.get("key_bits", 0) > 63 or facts.get("rows", 0) >= 2**31:
        return "the identifiers do not fit the native build's 63-bit packed key (or V >= 2^31 items)"
    return None


# The register budgets of the kernels (csrc/cuda/launch.h, ops/triton/*.py).
RESIDUAL_QUANTIZE_MAX_DIM = 256
CONTRASTIVE_TRITON_MAX_DIM = 512
CONTRASTIVE_CUDA_MAX_DIM = 128
# The Triton trie step sorts each query's per-row top lists in one program; beyond this many keys
# per query it would spill far out of registers.
TRIE_TRITON_MAX_KEYS = 1 << 16
TRIE_CUDA_MAX_K = 1 << 16

_INDEX_ADD = ("the codebook gradient is accumulated with torch's index_add_, which adds with atomics on CUDA "
              "(deterministic only under torch.use_deterministic_algorithms(True))")

OPS: dict[str, OpSpec] = {
    "residual_quantize": OpSpec(
        ("reference", "cpu", "triton", "cuda"),
        native={"cpu": "residual_quantize", "cuda": "residual_quantize"},
        limits={"cuda": _max_dim("CUDA", RESIDUAL_QUANTIZE_MAX_DIM),
                "triton": _max_dim("Triton", RESIDUAL_QUANTIZE_MAX_DIM)},
        nondeterministic={"reference": _INDEX_ADD, "triton": _INDEX_ADD,
                          "cuda": _INDEX_ADD}),
    "contrastive_loss": OpSpec(
        ("reference", "cpu", "triton", "cuda"),
        native={"cpu": "contrastive_loss_forward", "cuda": "contrastive_loss_forward"},
        limits={"cuda": _max_dim("CUDA", CONTRASTIVE_CUDA_MAX_DIM, float64_ok=False),
                "triton": _max_dim("Triton", CONTRASTIVE_TRITON_MAX_DIM, float64_ok=False)}),
    "trie_step": OpSpec(
        ("reference", "cpu", "triton", "cuda"),
        native={"cpu": "trie_step", "cuda": "trie_step"},
        limits={"triton": _trie_step_triton, "cuda": _trie_step_cuda}),
    "trie_walk": OpSpec(("reference", "cpu"), native={"cpu": "trie_walk"}),
    "trie_build": OpSpec(("reference", "cpu"), native={"cpu": "trie_build"}, limits={"cpu": _trie_build_cpu}),
    "trie_constrain_logits": OpSpec(("reference", "cpu"), native={"cpu": "trie_constrain_logits"}),
    "sinkhorn_assign": OpSpec(("reference", "cpu"), native={"cpu": "sinkhorn_assign"}),
    "beam_attention": OpSpec(("reference", "cpu"), native={"cpu": "beam_attention"}),
}


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
    """Why ``backend`` cannot run on ``device`` for any op (None when it can)."""
    if backend == "reference":
        return None
    if backend == "cpu":
        if device.type != "cpu":
            return f"the cpu backend takes CPU tensors, got {device.type} tensors"
        if not _native.has_native():
            return f"the native extension letter_fast._C is not loaded: {_native.LOAD_ERROR}"
        return None
    if backend == "cuda":
        if device.type != "cuda":
            return f"the cuda backend takes CUDA tensors, got {device.type} tensors"
        if not _native.has_native():
            return f"the native extension letter_fast._C is not loaded: {_native.LOAD_ERROR}"
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


def built_reason(op: str, backend: str) -> Optional[str]:
    """Why ``op`` has no ``backend`` in this installation, whatever the device (None when it has)."""
    spec = OPS[op]
    if backend not in spec.backends:
        return f"{op} has no {backend} kernel (it has {', '.join(spec.backends)})"
    if backend == "triton":
        return triton_import_error()
    native = spec.native.get(backend)
    if native is not None:
        if not _native.has_native():
            return f"the native extension letter_fast._C is not loaded: {_native.LOAD_ERROR}"
        if backend == "cuda" and not _native.has_native_cuda():
            return "letter_fast._C was built without CUDA kernels (reinstall on a machine with nvcc and a CUDA torch)"
        if not hasattr(torch.ops.letter_fast, native):
            return f"letter_fast._C lacks the {native} op (rebuild: python setup.py build_ext --inplace)"
    return None


def reason(op: str, backend: str, device: torch.device, facts: Optional[Mapping] = None) -> Optional[str]:
    """Why ``op`` cannot run on ``backend`` for tensors on ``device`` with these facts (None = it can)."""
    if backend not in BACKENDS:
        return f"unknown backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}"
    if backend not in OPS[op].backends:
        return built_reason(op, backend)
    # the device first: CPU tensors cannot go to a CUDA kernel on any machine, built or not
    why = generic_reason(backend, device) or built_reason(op, backend)
    if why is None and facts is not None and backend in OPS[op].limits:
        why = OPS[op].limits[backend](facts)
    return why


def requested(backend: Optional[str]) -> str:
    """The backend name asked for: the argument, else ``LETTER_FAST_BACKEND``, else ``auto``."""
    return (backend or os.environ.get(ENV_VAR) or "auto").strip().lower()


def resolve(op: str, backend: Optional[str], device: torch.device, *, caller: Optional[str] = None,
            **facts) -> str:
    """Pick the backend for one call of ``op`` on tensors on ``device``.

    ``facts`` are what the op's limits look at (``d``, ``dtype``, ``k``, ``keys``, ...);
    ``caller`` names the public function in messages (default ``op``). Raises ``ValueError`` for
    an unknown name and :class:`BackendUnavailable` (with the reason) for a named backend that
    cannot run.
    """
    if op not in OPS:
        raise KeyError(f"no backend table entry for op {op!r}")
    name = requested(backend)
    op_name = op
    op = caller or op
    if name == "auto":
        for candidate in _AUTO_ORDER.get(device.type, ("reference",)):
            if candidate in OPS[op_name].backends and reason(op_name, candidate, device, facts) is None:
                return candidate
        return "reference"
    if name not in BACKENDS:
        source = "" if backend else f" (from {ENV_VAR})"
        raise ValueError(f"{op}: unknown backend {name!r}{source}; choose one of auto, {', '.join(BACKENDS)}")
    why = reason(op_name, name, device, facts)
    if why is not None:
        fix = (f"It comes from {ENV_VAR}={name}: unset it or set it to auto" if not backend
               else "Use backend='auto' to take the fastest one that can")
        raise BackendUnavailable(f"{op}: backend {name!r} cannot run here: {why}. {fix}.")
    return name


def available(device: torch.device) -> dict[str, Optional[str]]:
    """Each backend's reason it cannot run on ``device`` for any op (None = runs)."""
    return {b: generic_reason(b, device) for b in BACKENDS}


def table(device: torch.device) -> dict[str, dict[str, dict]]:
    """The backend table for ``device``: ``{op: {backend: {"built", "runs", "why", "nondeterministic"}}}``.

    Only the backends an op has appear. ``why`` says why it does not run (None when it does): why
    it is not built if it is not, else why it cannot take tensors on ``device``;
    ``nondeterministic`` says why repeated calls on CUDA tensors may differ (None when they cannot).
    """
    out: dict[str, dict[str, dict]] = {}
    for op, spec in OPS.items():
        row = {}
        for b in spec.backends:
            if _DEVICE_OF.get(b, device.type) != device.type:
                continue  # the cpu kernel never takes CUDA tensors, nor the cuda kernel CPU ones
            built = built_reason(op, b)
            why = built or reason(op, b, device)
            if why is None and device.type == "cuda" and not torch.cuda.is_available():
                why = "no CUDA device is visible (torch.cuda.is_available() is False)"
            # every recorded source of non-determinism is a CUDA atomic; on CPU the same code is sequential
            nondet = spec.nondeterministic.get(b) if device.type == "cuda" else None
            row[b] = {"built": built is None, "runs": why is None, "why": why, "nondeterministic": nondet}
        out[op] = row
    return out


def nondeterministic_notes() -> list[tuple[str, list[str], str]]:
    """``(op, backends, why)`` for every op with a backend that may not repeat exactly (on CUDA tensors)."""
    out = []
    for op, spec in OPS.items():
        by_reason: dict[str, list[str]] = {}
        for b, why in spec.nondeterministic.items():
            by_reason.setdefault(why, []).append(b)
        out.extend((op, names, why) for why, names in by_reason.items())
    return out
