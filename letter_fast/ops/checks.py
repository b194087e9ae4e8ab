"""Input validation shared by the ops: one clear sentence saying what is wrong and what to do."""

from __future__ import annotations

from typing import Iterable

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def tensor(
    x,
    name: str,
    op: str,
    ndim: int,
    shape_doc: str,
    dtypes: Iterable[torch.dtype] = FLOAT_DTYPES,
    cast_hint: str = ".float()",
):
    """Check that ``x`` is a tensor of rank ``ndim`` and one of ``dtypes``."""
    dtypes = tuple(dtypes)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor {shape_doc}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{op}: {name} must have shape {shape_doc}, got shape {tuple(x.shape)}")
    if x.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        got = str(x.dtype).replace("torch.", "")
        raise TypeError(f"{op}: {name} must be one of {names}, got {got}; cast it with {cast_hint}")
    return x


def finite(x: torch.Tensor, name: str, op: str) -> None:
    """Reject NaN/Inf, naming how many and the first position."""
    if x.numel() == 0:
        return
    # One reduction, no [x]-sized mask: a NaN or Inf anywhere makes the sum non-finite. A sum can
    # also overflow on large finite values, so only a non-finite sum triggers the exact scan.
    if bool(torch.isfinite(x.sum(dtype=torch.float64 if x.dtype == torch.float64 else torch.float32))):
        return
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0].tolist())
        raise ValueError(
            f"{op}: {name} contains {int(bad.sum())} NaN/Inf value(s), first at index {first}; "
            f"clean or clip the input (e.g. torch.nan_to_num) before calling {op}"
        )


def same_device(op: str, **tensors: torch.Tensor) -> torch.device:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"{op}: all inputs must be on one device, got {listing}; move them with .to(device)")
    return next(iter(devices.values()))


def index_range(x: torch.Tensor, upper: int) -> bool:
    """True when every entry of the integer tensor ``x`` lies in ``[0, upper)`` (one reduction)."""
    if x.numel() == 0:
        return True
    lo, hi = torch.aminmax(x)
    return int(lo) >= 0 and int(hi) < upper
