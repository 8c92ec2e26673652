"""Splits of a folder in the Hugging Face Hub layout, named as `datasets.load_dataset` names them.

`data/train-00000-of-00002.parquet` (what `push_to_hub` writes), `<config>/<split>-*.parquet`,
`<split>/*.parquet`, `train.jsonl`: a run reads one split (`read.split`, default `train`, so a Hub
folder's evaluation splits never end up in training data unasked); files that name no split, and a
file given on its own, are always read; the other splits are counted, not read.
"""

from __future__ import annotations

import posixpath
import re

import braceexpand
import fsspec

from .units import InputError, unstrip

# Hugging Face's split keywords (`datasets.data_files.SPLIT_KEYWORDS`) and the names it gives them.
SPLIT_WORDS = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "dev": "validation", "val": "validation",
    "test": "test", "testing": "test", "eval": "test", "evaluation": "test",
}  # fmt: skip
_SHARD_NAME = re.compile(r"^(\w+(?:\.\w+)*)-\d{5}-of-\d{5}")
_WORDS = "|".join(sorted(SPLIT_WORDS, key=len, reverse=True))
_SPLIT_WORD = re.compile(rf"(?:^|[-._ 0-9])({_WORDS})(?=[-._ 0-9]|$)")
"""A keyword between separators (HF's `NON_WORDS_CHARS`), so `latest` or `devices` name no split."""


def hub_split(relpath: str) -> str | None:
    """The split `datasets.load_dataset(folder)` puts a file in, from its path inside the folder:
    `{split}-00000-of-00002.*` (what `push_to_hub` writes, under `data/` or `<config>/`), else a
    folder, then a file name, holding a split keyword between separators (`train/`, `val2014/`,
    `test.parquet`). None: the name says no split."""
    *folders, name = relpath.split("/")
    shard = _SHARD_NAME.match(name)
    if shard:
        return shard.group(1)
    for part in (*folders, name):
        word = _SPLIT_WORD.search(part)
        if word:
            return SPLIT_WORDS[word.group(1)]
    return None


def _input_roots(given: str) -> list[str]:
    """The folders an input lists files under (a folder, or a glob's fixed part); a file named on
    its own has none, so its name never decides whether it is read."""
    roots = []
    for uri in braceexpand.braceexpand(given):
        fs, path = fsspec.core.url_to_fs(uri)
        glob = next((i for i, c in enumerate(path) if c in "*?["), None)
        if glob is not None:
            roots.append(unstrip(fs, posixpath.dirname(path[:glob])))
        elif fs.isdir(path):
            roots.append(unstrip(fs, path.rstrip("/")))
    return roots


def _split_of(path: str, roots: list[str]) -> str | None:
    root = next((r for r in roots if path.startswith(r.rstrip("/") + "/")), None)
    return None if root is None else hub_split(path[len(root.rstrip("/")) + 1 :])


def by_split(containers: dict[tuple[str, str], str], split: str) -> tuple[dict, dict[str, list[str]]]:
    """(the containers of `split` or of none, the others by input: counted, not read). An input whose
    files all name other splits stops the run, listing the splits it has."""
    if split == "all":
        return containers, {}
    roots = {given: _input_roots(given) for given in set(containers.values())}
    kept: dict[tuple[str, str], str] = {}
    skipped: dict[str, list[str]] = {}
    found: dict[str, set[str]] = {}
    for (kind, path), given in containers.items():
        name = _split_of(path, roots[given])
        if name is None or name == split:
            kept[(kind, path)] = given
        else:
            skipped.setdefault(given, []).append(path)
            found.setdefault(given, set()).add(name)
    empty = sorted(set(skipped) - set(kept.values()))
    if empty:
        raise InputError(
            f"input {empty[0]!r} holds no file of split {split!r} (read.split); its splits are "
            f"{sorted(found[empty[0]])}: set read.split to one of them, or to 'all'"
        )
    return kept, skipped
