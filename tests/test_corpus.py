"""The corpus registry drives the CLI, the make targets and the layout; the reason registry is whole."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmcurate.cli import parser
from mmcurate.pipelines import corpus as corpora
from mmcurate.pipelines import layout
from mmcurate.pipelines.config import DEFAULTS_DIR
from mmcurate.schemas import REASONS, RECORD_KINDS, Fields, Status
from mmcurate.stages.base import load_filters

ROOT = Path(__file__).resolve().parents[1]


def test_every_registered_corpus_is_a_make_target_and_a_cli_command() -> None:
    make = (ROOT / "Makefile").read_text()
    (line,) = re.findall(r"^CORPORA := (.+)$", make, re.M)
    assert line.split() == list(corpora.REGISTRY)
    commands = parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(corpora.REGISTRY) <= set(commands)


@pytest.mark.parametrize("name", list(corpora.REGISTRY))
def test_each_corpus_is_complete(name: str) -> None:
    corpus = corpora.get(name)
    assert corpus.name == name
    assert (DEFAULTS_DIR / corpus.defaults).is_file()
    config = corpus.load_config(None)
    assert isinstance(config, corpus.config_class)
    fields = corpus.fields(config)
    assert list(fields) == [k.kind for k in corpus.kinds]
    assert all(isinstance(f, Fields) for f in fields.values())
    assert all(RECORD_KINDS[k.kind] is k for k in corpus.kinds)
    assert corpus.sample_kind is None or corpus.sample_kind in fields
    assert not set(corpus.outputs) & set(layout.CORE_PARTS)
    for cls in corpus.kinds:
        assert cls.parent_kind is None or cls.parent_kind in fields


def test_unknown_corpus_names_the_known_ones() -> None:
    with pytest.raises(corpora.UnknownCorpus, match="caption"):
        corpora.get("nope")


def test_every_filter_reason_is_a_registered_drop_that_select_may_redecide() -> None:
    for f in load_filters().values():
        for code in f.reasons:
            assert REASONS[code].status is Status.DROPPED and REASONS[code].redecide, (f.name, code)


def test_every_reason_code_used_in_the_code_is_registered() -> None:
    """settle("code") anywhere in the product code names a registered code (an unregistered one raises)."""
    load_filters()
    used = set()
    for path in [*ROOT.glob("pipelines/*.py"), *ROOT.glob("stages/**/*.py")]:
        used |= set(re.findall(r"\.settle\(\s*\"([a-z_]+)\"", path.read_text()))
        used |= set(re.findall(r"(?:VideoBroken|ImageBroken|ImageRejected)\(\s*\"([a-z_]+)\"", path.read_text()))
    assert used and used <= set(REASONS), sorted(used - set(REASONS))
