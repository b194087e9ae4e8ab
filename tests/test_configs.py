"""Settings are declared once: the shipped TOML files, the flags and the saved run settings all follow the dataclass."""

import argparse
import dataclasses
import inspect

import pytest

from letter_fast import config as C
from letter_fast.config import (
    CONFIG_DIR,
    SHIPPED,
    config_from_args,
    config_from_mapping,
    load_config_file,
    load_settings,
    packaged_config,
    render_toml,
    save_settings,
    shipped_class,
    shipped_text,
)


def test_every_shipped_config_is_registered():
    assert {p.stem for p in CONFIG_DIR.glob("*.toml")} == set(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_config_is_the_rendering_of_its_dataclass(name):
    # fails when a field, a default or a help text changes without `python -m letter_fast.config --write`
    assert packaged_config(name).read_text() == shipped_text(name), \
        f"letter_fast/configs/{name}.toml is stale: run `python -m letter_fast.config --write`"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_config_round_trips(name):
    cls = shipped_class(name)
    values = load_config_file(packaged_config(name))
    assert set(values) == {f.name for f in dataclasses.fields(cls)}
    assert config_from_mapping(cls, values) == cls()
    lines = packaged_config(name).read_text().splitlines()
    for f in dataclasses.fields(cls):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{f.name} ="))
        assert lines[at - 1].startswith("# "), f"{name}.toml: key {f.name} has no comment above it"


def test_the_check_mode_reports_a_stale_file(tmp_path, monkeypatch, capsys):
    assert C.main([]) == 0
    monkeypatch.setattr(C, "CONFIG_DIR", tmp_path)
    (tmp_path / "sasrec.toml").write_text("dim = 32\n")
    assert C.main([]) == 1
    assert "stale" in capsys.readouterr().out


def test_saved_settings_reload_with_every_value(tmp_path):
    from letter_fast.genrec.train import TigerTrainConfig
    from letter_fast.tokenizer.config import TokenizeConfig

    cfgs = [TokenizeConfig(variant="cf", hidden_dims=(48, 16), lr=3.5e-4, sinkhorn_last_level=False, epochs=7),
            TigerTrainConfig(d_model=48, tau=0.33, weight_decay=1e-5, device="cpu", progress=False)]
    for cfg in cfgs:
        path = save_settings(cfg, tmp_path / type(cfg).__name__)
        assert path.name == "settings.toml" and path.read_text().startswith("# Settings of this run")
        assert load_settings(type(cfg), path.parent) == cfg
        assert load_settings(type(cfg), path) == cfg


def test_rendering_special_values_reads_back(tmp_path):
    from typing import Optional

    @dataclasses.dataclass
    class Odd:
        ratio: float = dataclasses.field(default=float("inf"), metadata={"help": "infinite"})
        tiny: float = dataclasses.field(default=1e-12, metadata={"help": "exponent"})
        text: str = dataclasses.field(default='a "quoted"\\ path\n', metadata={"help": "escapes"})
        names: list[str] = dataclasses.field(default_factory=lambda: ["x", "y"], metadata={"help": "a list"})
        maybe: Optional[int] = dataclasses.field(default=None, metadata={"help": "unset"})

    path = tmp_path / "odd.toml"
    path.write_text(render_toml(Odd(tiny=3e-7, maybe=None)))
    assert config_from_mapping(Odd, load_config_file(path)) == Odd(tiny=3e-7)
    path.write_text(render_toml(Odd(maybe=5)))
    assert config_from_mapping(Odd, load_config_file(path)) == Odd(maybe=5)


def test_a_field_without_help_text_is_refused():
    @dataclasses.dataclass
    class NoHelp:
        x: int = 1

    with pytest.raises(ValueError, match="NoHelp.x has no help text"):
        render_toml(NoHelp)


def test_flags_override_the_file_which_overrides_the_defaults(tmp_path):
    from letter_fast.tokenizer.config import TokenizeConfig

    parser = argparse.ArgumentParser()
    C.add_config_arguments(parser, TokenizeConfig)
    (tmp_path / "c.toml").write_text("lr = 0.5\nepochs = 3\n")
    args = parser.parse_args(["--config", str(tmp_path / "c.toml"), "--epochs", "9", "--hidden-dims", "8,4",
                              "--no-sinkhorn-last-level"])
    cfg = config_from_args(TokenizeConfig, args)
    assert (cfg.lr, cfg.epochs, cfg.hidden_dims, cfg.sinkhorn_last_level) == (0.5, 9, (8, 4), False)
    assert cfg.batch_size == TokenizeConfig().batch_size


def test_tokenizer_settings_match_the_model_constructor():
    """TokenizerModelConfig's defaults and names are LetterTokenizer's keyword arguments."""
    from letter_fast.tokenizer.config import TokenizeConfig, TokenizerModelConfig
    from letter_fast.tokenizer.model import LetterTokenizer

    kwargs = TokenizerModelConfig().model_kwargs(alpha=0.02, beta=1e-4)
    params = inspect.signature(LetterTokenizer.__init__).parameters
    for name, value in kwargs.items():
        assert name in params, f"LetterTokenizer takes no {name!r}"
        assert params[name].default == value, (name, params[name].default, value)
    model = LetterTokenizer(input_dim=12, **TokenizeConfig(hidden_dims=(8,), codebook_size=16, diversity_clusters=2,
                                                           diversity_min_size=4).model_settings())
    assert model.codebook_size == 16 and model.diversity_cluster_sizes == (4, 60)


def test_group_configs_take_their_fields_from_the_groups():
    from letter_fast.genrec.tiger import TigerModelConfig
    from letter_fast.genrec.train import TigerTrainConfig
    from letter_fast.tokenizer.config import TokenizeConfig
    from letter_fast.tokenizer.train import TokenizerTrainConfig

    cfg = TigerTrainConfig(d_model=40, num_heads=2, lr=0.1)
    assert cfg.model_config() == TigerModelConfig(d_model=40, num_heads=2)
    assert {f.name for f in dataclasses.fields(TigerModelConfig)} <= {f.name for f in dataclasses.fields(cfg)}
    tok = TokenizeConfig(epochs=5, lr=0.2, latent_dim=8)
    assert tok.train_config() == TokenizerTrainConfig(epochs=5, lr=0.2)
    assert tok.train_config(progress=False).progress is False
    with pytest.raises(ValueError, match="variant must be one of"):
        TokenizeConfig(variant="best").check()


def test_a_comma_list_flag_fills_a_bare_tuple_field():
    """``--tasks seqrec`` (a bare ``tuple`` annotation) is the one task, not the tuple of its characters."""
    from letter_fast.commands.train_lcrec import add_parser
    from letter_fast.genrec.lcrec.train import LCRecTrainConfig

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    for flag, want in (("seqrec", ("seqrec",)), ("seqrec,item2index,index2item", ("seqrec", "item2index",
                                                                                   "index2item"))):
        args = parser.parse_args(["train-lcrec", "scientific", "--tasks", flag,
                                  "--lora-target-modules", "q_proj,v_proj"])
        config = config_from_args(LCRecTrainConfig, args)
        assert config.tasks == want
        assert config.lora_target_modules == ("q_proj", "v_proj")
        config.validate()
    # a TOML list and a Python tuple stay what they are
    assert config_from_mapping(LCRecTrainConfig, {"tasks": ["seqrec", "item2index"]}).tasks == ("seqrec", "item2index")
