"""Real data sets for tests: found through letter_fast's data-root resolution, skipped cleanly when absent."""

import pytest

from letter_fast.data import resolve_data_root


def data_folder(name: str):
    """The folder of data set ``name`` (e.g. "scientific"), or skip the test when it is not on this machine."""
    try:
        root = resolve_data_root()
    except FileNotFoundError as exc:
        pytest.skip(f"data root unusable: {exc}")
    if root is None or not (root / name).is_dir():
        pytest.skip(f"data set {name!r} not available (set LETTER_FAST_DATA to a folder holding it)")
    return root / name
