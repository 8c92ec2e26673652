"""Pipeline configuration: the defaults file, and error messages that name the key path and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mmcurate.pipelines.caption import CaptionConfig
from mmcurate.pipelines.config import DEFAULTS_DIR, ConfigError
from mmcurate.pipelines.config import load_config as _load
from mmcurate.stages.base import load_filters
from mmcurate.stages.caption_filters import CaptionLength, Language
from mmcurate.stages.image_filters import MinSide


def load_config(path: object) -> CaptionConfig:
    return _load(path, CaptionConfig, "caption.yaml")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message  # every message says which file
    return message


# ----------------------------------------------------------------------------------------------- defaults


def test_defaults_file_matches_the_models() -> None:
    """caption.yaml documents the defaults: every section equals the model's own defaults."""
    cfg = load_config(None)
    assert isinstance(cfg, CaptionConfig)
    fresh = CaptionConfig()
    assert cfg.read == fresh.read
    assert cfg.decode == fresh.decode
    assert cfg.dedup == fresh.dedup
    assert cfg.output == fresh.output


def test_default_filters_build_in_file_order_with_file_params() -> None:
    raw = yaml.safe_load((DEFAULTS_DIR / "caption.yaml").read_text(encoding="utf-8"))
    cfg = load_config(None)
    filters = cfg.build_filters()
    assert [f.name for f in filters] == list(raw["filters"])
    registry = load_filters()
    for f in filters:
        assert type(f) is registry[f.name]
        for key, value in (raw["filters"][f.name] or {}).items():
            got = getattr(f.params, key)
            assert (list(got) if isinstance(got, tuple) else got) == value


def test_path_as_str_or_path_and_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    assert load_config(path) == load_config(None)  # an empty file overrides nothing
    assert load_config(str(path)) == load_config(None)


def test_overrides_and_null_filter_params(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            "filters:\n  min_side: {min: 128}\n  caption_length: null\n  language: {allowed: [en, de], min_prob: 0.8}\n"
            "output: {format: webp, quality: 80, shard: {max_samples: 500}}\n",
        )
    )
    filters = cfg.build_filters()
    assert [type(f) for f in filters] == [MinSide, CaptionLength, Language]
    assert filters[0].params.min == 128
    assert filters[1].params == CaptionLength.Params()
    assert filters[2].params.allowed == ("en", "de")
    assert filters[2].params.min_prob == 0.8
    assert (cfg.output.format, cfg.output.quality, cfg.output.shard.max_samples) == ("webp", 80, 500)
    assert cfg.output.shard.max_bytes == CaptionConfig().output.shard.max_bytes


# ----------------------------------------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="does not exist") as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_invalid_yaml(tmp_path: Path) -> None:
    assert "is not valid YAML" in error_of(tmp_path, "filters: {min_side: [\n")


@pytest.mark.parametrize("text", ["- read\n- decode\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    assert "must hold a mapping at the top level" in error_of(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("reed: {}\n", "reed: unknown key (check the spelling)"),
        ("decode: {max_pixel: 5}\n", "decode.max_pixel: unknown key (check the spelling)"),
        ("output: {shard: {max_sample: 5}}\n", "output.shard.max_sample: unknown key (check the spelling)"),
        ("filters: {min_side: {mn: 3}}\n", "filters.min_side.mn: unknown key (check the spelling)"),
    ],
)
def test_unknown_keys_name_their_path(tmp_path: Path, text: str, expected: str) -> None:
    """The Data-Juicer #1019 complaint: a typo must name the key path, not be ignored."""
    assert expected in error_of(tmp_path, text)


def test_unknown_filter_lists_the_known_ones(tmp_path: Path) -> None:
    message = error_of(tmp_path, "filters: {min_sid: {min: 3}}\n")
    assert "filters.min_sid: unknown filter" in message
    for name, f in load_filters().items():
        assert (name in message) == ("caption" in f.kinds)


def test_a_filter_of_another_corpus_is_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, "filters: {motion: {min: 1}}\n")
    assert "filters.motion: not a caption filter" in message


@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        ("decode: {max_pixels: lots}\n", "decode.max_pixels", "'lots'"),
        ("filters: {min_side: {min: tiny}}\n", "filters.min_side.min", "'tiny'"),
        ("filters: {language: {min_prob: high}}\n", "filters.language.min_prob", "'high'"),
        ("dedup: {near: maybe}\n", "dedup.near", "'maybe'"),
    ],
)
def test_wrong_types_name_the_key_and_the_value(tmp_path: Path, text: str, path: str, value: str) -> None:
    message = error_of(tmp_path, text)
    assert f"{path}: " in message
    assert f"(got {value})" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("output: {format: gif}\n", "output.format must be one of jpeg, png, webp, got 'gif'"),
        ("output: {quality: 0}\n", "output.quality must be within 1..100, got 0"),
        ("output: {quality: 101}\n", "output.quality must be within 1..100, got 101"),
        ("dedup: {max_distance: 17}\n", "dedup.max_distance must be within 0..16, got 17"),
        ("output: {shard: {max_samples: 0}}\n", "output.shard.max_samples: Input should be greater than or equal to 1"),
        ("output: {shard: {max_bytes: 10}}\n", "output.shard.max_bytes: Input should be greater than or equal to 1024"),
    ],
)
def test_value_checks_say_what_is_allowed(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(tmp_path, text)
    assert expected in message
    assert "Value error" not in message  # pydantic's wording is replaced by ours


def test_several_errors_are_reported_together(tmp_path: Path) -> None:
    """One run of the config check shows every mistake, not just the first."""
    message = error_of(tmp_path, "reed: {}\ndecode: {working_side: big}\noutput: {quality: 0}\n")
    assert "reed: unknown key" in message
    assert "decode.working_side: " in message
    assert "output.quality must be within 1..100" in message
    assert message.count("; ") >= 2


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_shipped_configs_all_load() -> None:
    """Every YAML shipped with the package validates (a shipped config must never fail a user's run)."""
    shipped = sorted(DEFAULTS_DIR.glob("caption*.yaml"))
    assert shipped
    for path in shipped:
        assert isinstance(load_config(path), CaptionConfig)
