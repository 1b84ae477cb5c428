"""Our table of released configs equals what the reference ships; yaml and validation behave."""

from __future__ import annotations

import pytest
import yaml
from _reference import require_reference

from pocket_ggml.errors import ConfigError
from pocket_ggml.format.config import (
    PocketConfig,
    load_config_yaml,
    load_released_config,
    released_config_names,
)
from pocket_ggml.format.released_configs import RELEASED_CONFIGS


def test_table_holds_every_config_the_reference_ships():
    require_reference()
    from pocket_tts.utils.config import CONFIGS_DIR

    shipped = {p.stem: p for p in CONFIGS_DIR.glob("*.yaml")}
    assert set(shipped) == set(RELEASED_CONFIGS)
    for name, path in shipped.items():
        ref = PocketConfig.from_reference_dict(name, yaml.safe_load(path.read_text(encoding="utf-8")))
        assert load_released_config(name) == ref, name


def test_every_released_config_validates_with_expected_sizes():
    for name in released_config_names():
        load_released_config(name)
    en = load_released_config("english")
    assert (en.flow_lm.d_model, en.flow_lm.num_layers, en.flow_lm.head_dim, en.flow_lm.dim_feedforward) == (
        1024,
        6,
        64,
        4096,
    )
    assert (en.mimi.frame_size, en.mimi.resample_stride, en.mimi.decoder_transformer.context) == (1920, 16, 250)
    small = load_released_config("english_2m_2026-10")
    assert (small.flow_lm.num_kv_heads, small.flow_lm.text_rank, small.flow_lm.z_dim, small.flow_lm.flow_type) == (
        1,
        32,
        64,
        "pointwise",
    )
    assert small.generation.eos_threshold == -1.0
    assert load_released_config("english_2026-04_24l").flow_lm.num_layers == 24


def test_unknown_config_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown config 'englsh'"):
        load_released_config("englsh")


def test_reference_yaml_is_read(tmp_path):
    d = dict(RELEASED_CONFIGS["english_7m_2026-10"])
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump(d), encoding="utf-8")
    cfg = load_config_yaml(p)
    assert cfg == load_released_config("english_7m_2026-10").with_name("mine")


@pytest.mark.parametrize("content", ["[1, 2]", "flow_lm: {}\nmimi: {}\n", "::: not yaml :::\n\t- ["])
def test_malformed_yaml_is_a_config_error(tmp_path, content):
    p = tmp_path / "bad.yaml"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError):
        load_config_yaml(p)


def test_inconsistent_heads_are_rejected():
    d = yaml.safe_load(yaml.safe_dump(RELEASED_CONFIGS["english"]))
    d["flow_lm"]["transformer"]["num_heads"] = 7
    with pytest.raises(ConfigError, match="heads"):
        PocketConfig.from_reference_dict("bad", d)


def test_every_config_field_is_stored_under_one_gguf_key():
    """The GGUF key table covers the config: a field without a key would not survive a file."""
    import dataclasses
    import typing

    from pocket_ggml.format.gguf_keys import CONFIG_KEYS

    def leaves(cls: type, prefix: str) -> list[str]:
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                out += leaves(hints[f.name], f"{prefix}{f.name}.")
            else:
                out.append(f"{prefix}{f.name}")
        return out

    fields = [k.field for k in CONFIG_KEYS]
    assert len(set(fields)) == len(fields) and len({str(k) for k in CONFIG_KEYS}) == len(CONFIG_KEYS)
    assert set(fields) == set(leaves(PocketConfig, "")) - {"name"}
