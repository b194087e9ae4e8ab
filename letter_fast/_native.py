"""The compiled extension ``letter_fast._C``, loaded once and never fatal.

Importing ``_C`` registers the native ops under ``torch.ops.letter_fast``. When it is missing
(``LETTER_FAST_SKIP_NATIVE=1`` builds, a failed compile, a torch upgrade without a rebuild) the
library still imports; the reference and Triton backends keep working and
``python -m letter_fast.info`` says why the native ones do not.
"""

from __future__ import annotations

import importlib

import torch  # noqa: F401  (loads libtorch before the extension that links against it)

_BUILD_HINT = ("build it from the source tree with `pip install --no-build-isolation -e .` "
               "or `python setup.py build_ext --inplace`")

try:
    # import_module, not `from letter_fast import _C`: for a missing file the latter reports
    # "cannot import name ... (most likely due to a circular import)", which misleads
    _C = importlib.import_module("letter_fast._C")
    LOAD_ERROR: str | None = None
except ModuleNotFoundError as exc:
    if exc.name != "letter_fast._C":  # the extension exists but something it needs does not
        _C = None
        LOAD_ERROR = f"ModuleNotFoundError: {exc}"
    else:
        _C = None
        LOAD_ERROR = ("it is not built: no compiled letter_fast._C next to letter_fast/__init__.py (an install "
                      f"with LETTER_FAST_SKIP_NATIVE=1 skips it); {_BUILD_HINT}")
except Exception as exc:  # ImportError, or an undefined-symbol OSError after a torch upgrade
    _C = None
    LOAD_ERROR = f"{type(exc).__name__}: {exc} (rebuild against the installed torch: {_BUILD_HINT})"


def build_info() -> dict:
    """What the compiled extension contains ({} when it is not loaded)."""
    return dict(_C.build_info()) if _C is not None else {}


def has_native() -> bool:
    return _C is not None


def has_native_cuda() -> bool:
    return bool(build_info().get("cuda", False))
