"""The flags every data-set command takes, added in one place so that they read the same everywhere.

    DATASET                 positional: a data set folder, its <Name>.inter.json, or a name under --data-root
    --data-root DIR         folder of data sets
    --out-dir DIR           where the command writes (each command documents its default)
    --resume / --no-resume  continue from what --out-dir holds (default) / start afresh
    --seed N                random seed
    --device DEV            torch device
    --progress / --no-progress
    --config FILE           TOML settings (defaults <- file <- flags); --print-config prints them and exits

``--seed``, ``--device`` and ``--progress`` default to None ("not given"): where the command's settings dataclass
has a field of that name, the flag overrides the config file's value, which overrides the dataclass default.
``require_dataset(args)`` gives the one-line error when a command needs the data set and none was given.
``inspect``, ``quantize`` and ``add-items`` read files, not a data set, and train nothing: they take none of these
(``add-items`` has its own ``--out-dir`` and ``--device``, meaning the same).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Optional

from letter_fast.config import add_config_arguments, field_default

# The commands that take the common flags (cli.py's names); a test checks each one's --help.
DATASET_COMMANDS = ("embed", "train-cf", "tokenize", "train-tiger", "train-lcrec", "evaluate", "run")


def _default(cls, name: str, fallback):
    for f in dataclasses.fields(cls) if cls is not None else ():
        if f.name == name:
            return field_default(f)
    return fallback


def add_common_arguments(p: argparse.ArgumentParser, config_cls, *, dataset_help: Optional[str] = None,
                         out_dir_help: str = "output folder",
                         resume_help: str = "continue from what --out-dir holds") -> None:
    """The common flags, then ``config_cls``'s settings flags (:func:`letter_fast.config.add_config_arguments`)."""
    where = "data set folder, <Name>.inter.json, or a name under the data root"
    # never required by argparse (so that --print-config and --help need no data set); each command checks it
    p.add_argument("dataset", nargs="?", help=dataset_help or where)
    common = p.add_argument_group("common options (the same in every command)")
    common.add_argument("--data-root", help="folder of data sets (default: $LETTER_FAST_DATA)")
    common.add_argument("--out-dir", help=out_dir_help)
    common.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help=f"{resume_help} (default: yes); --no-resume starts afresh")
    common.add_argument("--seed", type=int, default=None,
                        help=f"random seed (default: {_default(config_cls, 'seed', 0)})")
    device = _default(config_cls, "device", "cpu")
    common.add_argument("--device", default=None, help=f"torch device: cpu | cuda | cuda:N | auto (default: {device})")
    common.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show progress bars (default: yes)")
    common.add_argument("--config", metavar="FILE", help="TOML settings (keys as --print-config writes them; a "
                                                         "run's <out-dir>/settings.toml repeats it); flags override "
                                                         "the file")
    common.add_argument("--print-config", action="store_true",
                        help="print the settings (defaults <- --config <- flags) as TOML and exit")
    add_config_arguments(p, config_cls)


def common_value(args, cfg, name: str, fallback):
    """The value of a common flag: the settings field when the config has one, else the flag, else ``fallback``."""
    if cfg is not None and hasattr(cfg, name):
        return getattr(cfg, name)
    value = getattr(args, name, None)
    return fallback if value is None else value


def require_dataset(args) -> str:
    if not args.dataset:
        raise ValueError("give a data set (folder, <Name>.inter.json, or a name under the data root)")
    return args.dataset


def load_data_and_codes(data: str, data_root, index_path):
    """The data set and its ``[V, L]`` item codes (``index_path`` or the data set's own index)."""
    from letter_fast.data import load_dataset, read_index_json

    dataset = load_dataset(data, data_root)
    if index_path:
        codes = read_index_json(index_path, num_items=dataset.num_items)
    elif dataset.codes is not None:
        codes = dataset.codes
    else:
        raise FileNotFoundError(f"{dataset.name} has no {dataset.name}.index.json; pass the identifiers with --index")
    return dataset, codes


@dataclasses.dataclass
class RecommenderRun:
    """What every recommender-training command sets up the same way (train-tiger, train-lcrec)."""

    config: object
    dataset: object
    codes: object
    out: object          # Path of the run folder
    main: bool           # rank 0 (writes the files, prints)

    def log(self, *parts) -> None:
        if self.main:
            print(*parts)


def start_recommender_run(args, config_cls, suffix: str, describe: str = "") -> RecommenderRun:
    """Settings (defaults <- --config <- flags, validated), data set + identifiers, the run folder
    (``--out-dir``, default ``runs/<name>-<suffix>``; ``--no-resume`` drops its checkpoint) and its
    ``settings.toml``, written by rank 0 only."""
    import os
    from pathlib import Path

    from letter_fast.config import config_from_args, save_settings

    config = config_from_args(config_cls, args)
    config.validate()
    require_dataset(args)
    dataset, codes = load_data_and_codes(args.dataset, args.data_root, args.index)
    out = Path(args.out_dir) if args.out_dir else Path("runs") / f"{dataset.name.lower()}-{suffix}"
    main = int(os.environ.get("RANK", "0")) == 0
    if not args.resume and main and (out / "checkpoint.pt").exists():
        (out / "checkpoint.pt").unlink()
    run = RecommenderRun(config=config, dataset=dataset, codes=codes, out=out, main=main)
    if main:
        save_settings(config, out)
    run.log(f"{dataset.name}: {dataset.num_users} users, {dataset.num_items} items, identifiers "
            f"{tuple(codes.shape)}{describe} -> {out}")
    return run


def finish_recommender_run(run: RecommenderRun, metrics: dict, write, name: str, unit: str, **result) -> None:
    """Rank 0 writes ``metrics.json`` + ``metrics.md`` through ``write(result, json_path, md_path, name=...)`` and
    prints the table and the training speed (``timing.json``). ``result`` adds keys to the json."""
    import json

    if not run.main:
        return
    result = {"metrics": {k: v for k, v in metrics.items() if "@" in k and not k.startswith("best")},
              "users": metrics["test_users"], "num_beams": run.config.num_beams, **result}
    result.setdefault("details", metrics)
    table = write(result, run.out / "metrics.json", run.out / "metrics.md", name=f"{name} on {run.dataset.name}")
    timing = run.out / "timing.json"
    speed = json.loads(timing.read_text()).get("train_samples_per_s", float("nan")) if timing.exists() \
        else float("nan")
    print(f"stopped: {metrics['stopped']}; training {speed:.1f} {unit}/s")
    print(table, end="")
