"""Inputs as units of parallel work: one shard, one parquet file, a slice of a jsonl, a slice of a folder.

Listing happens on the driver before the run: it expands braces, globs and folders on any fsspec
filesystem into a sorted, deterministic list, so that a rerun (or `mmcurate select`) reads exactly
the same units. A jsonl is counted once here (its lines and the byte offset of each slice), so the
line count of every slice is known before a line is parsed: the count the accounting checks.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import braceexpand
import fsspec

from .paths import filesystem

TAR_EXTS = (".tar", ".tgz", ".tar.gz")
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


class InputError(ValueError):
    """An input URI that cannot be used: raised before the pipeline starts."""


@dataclass(frozen=True)
class Unit:
    index: int
    kind: str
    """wds | parquet | jsonl | folder (images) | videos (video files)."""
    uri: str
    files: tuple[str, ...] = field(default_factory=tuple)
    start: int = 0
    """jsonl: the slice's first line in the file; folder, videos: the position of the slice's first
    file in its folder's sorted file list (for the read limit only: record sources do not use it)."""
    stop: int = -1
    """jsonl: lines [start, stop) of the file; -1 = to the end."""
    offset: int = 0
    """Byte offset of line `start` (jsonl), so a slice seeks instead of re-reading the lines before it."""
    group: str = ""
    """The --input argument this unit came from: "per input" statistics (top fractions) group by it."""
    ignored: tuple[str, ...] = field(default_factory=tuple)
    """Files beside this folder slice's media that are neither media nor sidecars (counted, not read)."""


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_text(text: str) -> str:
    """Valid UTF-8 with no NUL or other control character (each becomes a space; tabs and newlines
    stay): text from inputs is never written raw into a ledger, a shard or a trainer file."""
    return _CONTROL.sub(" ", utf8(text))


def utf8(text: str) -> str:
    """Replace lone surrogates (JSON escapes like "\\ud83d", undecodable file names) so columns can be written."""
    return text.encode("utf-8", "replace").decode("utf-8")


def stable_error(exc: BaseException, name: str) -> str:
    """`Type: message` with object reprs (`<...File object at 0x7f..>`) replaced by `name`, so the
    quarantine table is the same on every rerun."""
    return _OBJECT_REPR.sub(name, f"{type(exc).__name__}: {exc}")


def unstrip(fs: Any, path: str) -> str:
    return fs.unstrip_protocol(path) if fs.protocol not in ("file", ("file", "local")) else path


def expand_uri(uri: str) -> tuple[Any, str, list[str], bool]:
    """(filesystem, path, the files it names, whether it named a folder): a glob, a folder or one
    file, sorted; InputError when nothing is there, or when its filesystem package is not installed.
    Hidden files are listed too (and counted)."""
    fs, path = filesystem(uri, lambda message: InputError(f"input {message}"))
    if any(c in path for c in "*?["):
        return fs, path, sorted(fs.glob(path)), False
    if fs.isdir(path):
        return fs, path, sorted(fs.find(path)), True
    if fs.exists(path):
        return fs, path, [path], False
    raise InputError(f"input {uri!r} does not exist")


def _line_offsets(uri: str, step: int) -> tuple[int, list[int]]:
    """(number of lines, byte offset of every `step`-th line) in one pass over the file."""
    offsets, pos, n = [0], 0, 0
    with fsspec.open(uri, "rb") as f:
        for n, line in enumerate(f, 1):
            pos += len(line)
            if n % step == 0:
                offsets.append(pos)
    if len(offsets) > 1 and offsets[-1] == pos and n % step == 0:
        offsets.pop()  # no slice starts at the very end
    return n, offsets


def jsonl_units(path: str, lines: int, first_index: int, group: str) -> list[Unit]:
    """A jsonl file as units of `lines` lines, each knowing its line range and the byte offset where it starts."""
    n, offsets = _line_offsets(path, lines)
    return [
        Unit(first_index + i, "jsonl", path, start=i * lines, stop=min((i + 1) * lines, n), offset=offset, group=group)
        for i, offset in enumerate(offsets)
    ]


@dataclass
class Scan:
    """What the inputs hold: containers (kind, path) -> the input naming them; loose files by input."""

    containers: dict[tuple[str, str], str] = field(default_factory=dict)
    loose: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """input -> (folder root, file) for media files not inside a container."""
    other: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """input -> (folder root, file) for files that are neither media, containers nor sidecars."""


def scan_inputs(inputs: list[str], classify: Callable[[str], str | None], what: str) -> Scan:
    """Expand every input; `classify(path)` says wds / parquet / jsonl / media / sidecar / None."""
    if not inputs:
        raise InputError("no input given: pass --input URI [URI ...]")
    scan = Scan()
    for given in inputs:
        for uri in braceexpand.braceexpand(given):
            fs, path, paths, is_dir = expand_uri(uri)
            kinds = [(classify(p), unstrip(fs, p)) for p in paths]
            if not any(k in ("wds", "parquet", "jsonl", "media") for k, _ in kinds):
                raise InputError(f"input {uri!r} holds no {what}")
            root = unstrip(fs, path.rstrip("/")) if is_dir else posixpath.dirname(kinds[0][1])
            # Media beside a jsonl/parquet are the ones its rows point at: not a second, folder corpus.
            pointed_at = any(k in ("wds", "parquet", "jsonl") for k, _ in kinds)
            for kind, p in kinds:
                if kind in ("wds", "parquet", "jsonl"):
                    scan.containers.setdefault((kind, p), given)
                elif kind == "media" and not pointed_at:
                    scan.loose.setdefault(given, []).append((root, p))
                elif kind is None:
                    scan.other.setdefault(given, []).append((root, p))
    return scan


def hidden(path: str) -> bool:
    """`.DS_Store`, `._IMG_0001.jpg` (AppleDouble), `.hidden.tar`: never an input, always counted."""
    return posixpath.basename(path).startswith(".")


def attach_ignored(units: list[Unit], ignored: dict[str, list[str]]) -> list[Unit]:
    """Files an input holds that are not read go to the first unit of that input, so the manifest
    counts them (`ignored_files`) wherever they were found."""
    out, done = list(units), set()
    for i, unit in enumerate(out):
        if unit.group in ignored and unit.group not in done:
            done.add(unit.group)
            out[i] = dataclasses.replace(unit, ignored=tuple(sorted({*unit.ignored, *ignored[unit.group]})))
    return out
