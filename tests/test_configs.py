"""Every shipped config file lists exactly its dataclass's keys, at their defaults, each commented."""

import dataclasses

import pytest

from letter_fast.cf.sasrec import SASRecConfig
from letter_fast.commands.embed import EmbedConfig
from letter_fast.config import CONFIG_DIR, config_from_mapping, load_config_file, packaged_config
from letter_fast.genrec.train import TigerTrainConfig
from letter_fast.tokenizer.config import TokenizeConfig

SHIPPED = {"embed": EmbedConfig, "sasrec": SASRecConfig, "tiger": TigerTrainConfig, "tokenizer": TokenizeConfig}


def test_every_shipped_config_is_checked():
    assert {p.stem for p in CONFIG_DIR.glob("*.toml")} == set(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_config_matches_dataclass(name):
    cls = SHIPPED[name]
    values = load_config_file(packaged_config(name))
    assert set(values) == {f.name for f in dataclasses.fields(cls)}
    assert config_from_mapping(cls, values) == cls()
    lines = packaged_config(name).read_text().splitlines()
    for key in values:
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{key} ="))
        assert lines[at - 1].startswith("#"), f"{name}.toml: key {key} has no comment above it"
