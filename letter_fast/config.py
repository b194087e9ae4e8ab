"""Experiment configs: a dataclass of settings, a TOML file with commented keys, command-line overrides.

Precedence: dataclass defaults < ``--config FILE`` (TOML; ``tomllib`` is in the standard library) <
command-line flags. Each dataclass field carries its help text in ``metadata["help"]``; the shipped
files under ``letter_fast/configs/`` repeat every key with a comment (a test keeps them in step).

    @dataclass
    class MyConfig:
        lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})

    add_config_arguments(parser, MyConfig)          # --config FILE, --lr ...
    cfg = config_from_args(MyConfig, args)          # defaults <- file <- flags, type-checked
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any, Mapping, Type, TypeVar

from letter_fast.io import PathLike

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - python 3.10
    import tomli as tomllib

T = TypeVar("T")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def _field_type(cls, f: dataclasses.Field):
    hints = typing.get_type_hints(cls)
    tp = hints[f.name]
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _coerce(value: Any, tp, optional: bool, where: str):
    if value is None:
        if optional:
            return None
        raise ValueError(f"{where}: a value is required")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(tp) in (list, tuple):
        inner = (typing.get_args(tp) or (str,))[0]
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)):
            items = [_coerce(v.strip() if isinstance(v, str) else v, inner, False, where) for v in value]
            return tuple(items) if typing.get_origin(tp) is tuple else items
    else:
        return value
    name = getattr(tp, "__name__", str(tp))
    raise ValueError(f"{where}: expected {name}, got {value!r}")


def _coerce_values(cls, values: Mapping[str, Any], source: str) -> dict:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in fields:
            raise ValueError(f"{source}: unknown key {key!r}; valid keys: {', '.join(fields)}")
        tp, optional = _field_type(cls, fields[key])
        out[key] = _coerce(value, tp, optional, f"{source}: key {key!r}")
    return out


def config_from_mapping(cls: Type[T], values: Mapping[str, Any], source: str = "config") -> T:
    """Build ``cls`` from ``values`` over its defaults; unknown keys and wrong types name ``source`` and the key."""
    return cls(**_coerce_values(cls, values, source))


def load_config_file(path: PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from exc


def add_config_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """``--config FILE`` plus one ``--key`` flag per field (default None = "not given", so the file wins)."""
    parser.add_argument("--config", metavar="FILE", help="TOML config file (keys as in letter_fast/configs/); "
                                                         "flags given here override it")
    group = parser.add_argument_group("settings (config keys; the flag overrides the file)")
    for f in dataclasses.fields(cls):
        tp, _ = _field_type(cls, f)
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        if tp is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=help_text)


def config_from_args(cls: Type[T], args: argparse.Namespace) -> T:
    """Defaults <- ``args.config`` (if any) <- every flag the user gave."""
    values: dict = {}
    if getattr(args, "config", None):
        values.update(_coerce_values(cls, load_config_file(args.config), str(args.config)))
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    values.update(_coerce_values(cls, flags, "command line"))
    return cls(**values)


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def packaged_config(name: str) -> Path:
    """Path of a shipped config, e.g. ``packaged_config("sasrec")`` -> letter_fast/configs/sasrec.toml."""
    return CONFIG_DIR / f"{name}.toml"


__all__ = ["add_config_arguments", "config_from_args", "config_from_mapping", "config_to_dict", "load_config_file",
           "packaged_config", "CONFIG_DIR"]
