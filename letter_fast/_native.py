"""The compiled extension ``letter_fast._C``, loaded once and never fatal.

Importing ``_C`` registers the native ops under ``torch.ops.letter_fast``. When it is missing
(``LETTER_FAST_SKIP_NATIVE=1`` builds, a failed compile, a torch upgrade without a rebuild) the
library still imports; the reference and Triton backends keep working and
``python -m letter_fast.info`` says why the native ones do not.
"""

from __future__ import annotations

import torch  # noqa: F401  (loads libtorch before the extension that links against it)

try:
    from letter_fast import _C  # type: ignore[attr-defined]

    LOAD_ERROR: str | None = None
except Exception as exc:  # ImportError, or an undefined-symbol OSError after a torch upgrade
    _C = None
    LOAD_ERROR = f"{type(exc).__name__}: {exc}"


def build_info() -> dict:
    """What the compiled extension contains ({} when it is not loaded)."""
    return dict(_C.build_info()) if _C is not None else {}


def has_native() -> bool:
    return _C is not None


def has_native_cuda() -> bool:
    return bool(build_info().get("cuda", False))
