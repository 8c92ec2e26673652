"""A run folder before a run starts: refuse to mix two runs, resume one, or clear what one wrote.

A run in progress keeps its identity in `_work/run.json`: a hash of its config, of its unit list
and of the code, and the manifest's header (so a resumed run's manifest is the uninterrupted one's).
`--resume` goes on only with the same config, inputs and code, and skips what the markers say is
done (`_work/spooled/part-UUUUU.json`: scored; `summaries/part-UUUUU.json`: committed).
`--overwrite` deletes only files a run wrote: those its summaries and manifest list, its
bookkeeping, and the per-unit files of the units in its `units.json`; anything else stays, and is
reported. `overlays/` always stays (facts added later about the records outlive a rerun).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

import fsspec

from mmcurate.stages.io import Unit
from mmcurate.stages.writers import atomic_write, join, json_bytes

from . import layout

STATE_FORMAT = "mmcurate.run/1"
_PART = re.compile(r"part-(\d+)")
_UNIT_FILE = re.compile(r"part-(\d{5,})(?:-\d{4,})?\.(?:tar|parquet|jsonl?|pkl|bin|mp4)(\.tmp-[0-9a-f]{12})?")
"""A per-unit file a run writes (shards, tables, summaries, corpus outputs), or its temporary name."""
_TMP = re.compile(r".+\.tmp-[0-9a-f]{12}")
"""A file an atomic write left half-written when its process was killed."""
_CONTENT_FILE = re.compile(r"[0-9a-f]{64}\.[a-z0-9]{1,5}(\.tmp-[0-9a-f]{12})?")
"""A content-addressed file of a corpus's own folder (SFT `images/<sha256>.<ext>`), shared by units."""
_WHAT = {"corpus": "the corpus", "config_sha256": "the config", "units_sha256": "the inputs",
         "code_sha256": "the mmcurate code", "lineage_sha256": "the parent run (its manifest or overlays)"}  # fmt: skip


class OutputError(ValueError):
    """The output location cannot be used as asked."""


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def identity_config(config: Any) -> dict[str, Any]:
    """The config as the run's identity sees it: where its stages are placed on a cluster
    (`models.placement`, the pass-rate `placement`) changes no output, so a failed cluster run may be
    resumed with other resource hints."""
    dump = config.model_dump(mode="json")
    dump.pop("placement", None)
    if isinstance(dump.get("models"), dict):
        dump["models"].pop("placement", None)
    return dump


def run_identity(
    corpus: str, config: Any, units: list[Unit], code: dict[str, str], lineage: dict | None = None
) -> dict[str, str]:
    """What must not change between a run and its resumption (hashes only: no secret is stored).
    The lineage of a select run names its parent's manifest and overlay files."""
    return {
        "corpus": corpus,
        "config_sha256": _sha(identity_config(config)),
        "units_sha256": _sha([dataclasses.asdict(u) for u in units]),
        "code_sha256": _sha(code),
        # where the parent is (however its path is spelled) is not what it is: its manifest and overlays are
        "lineage_sha256": _sha({k: v for k, v in (lineage or {}).items() if k != "parent_run"}),
    }


@dataclass
class Prepared:
    """What the folder held, for the run about to start."""

    meta: dict[str, Any] | None = None
    """The interrupted run's manifest header (a resumed run writes the same manifest)."""
    spooled: frozenset[int] = frozenset()
    committed: frozenset[int] = frozenset()
    finished: dict[str, Any] | None = None
    """`--resume` on a run that had finished: its manifest; nothing is run."""
    left: list[str] = field(default_factory=list)
    """`--overwrite`: files in the folder mmcurate did not write, left in place."""


def _fs(out_root: str) -> tuple[Any, str]:
    return fsspec.core.url_to_fs(out_root)


def _read_json(fs: Any, path: str) -> Any:
    with fs.open(path, "rb") as f:
        return json.loads(f.read())


def holds_run(out_root: str, parts: tuple[str, ...]) -> list[str]:
    fs, root = _fs(out_root)
    return [p for p in (*layout.CORE_PARTS, *parts) if p != layout.OVERLAYS and fs.exists(join(root, p))]


def prepare(
    out_root: str, identity: dict[str, str], parts: tuple[str, ...], overwrite: bool = False, resume: bool = False
) -> Prepared:
    """Check the folder against how the run was asked to treat it (see the module docstring)."""
    if overwrite and resume:
        raise _both_error()
    fs, root = _fs(out_root)
    existing = holds_run(out_root, parts)
    prepared = Prepared()
    if resume and existing:
        prepared = _resumable(out_root, identity)
    elif existing and not overwrite:
        raise _holds_run_error(out_root, existing)
    elif existing:
        prepared.left = clear_run(out_root, parts)
    fs.makedirs(root, exist_ok=True)
    return prepared


def _both_error() -> OutputError:
    return OutputError("--overwrite and --resume exclude each other: resume a run, or start it again")


def _holds_run_error(out_root: str, existing: list[str]) -> OutputError:
    return OutputError(
        f"output {out_root} already holds a run ({', '.join(existing)}): pass --resume to go on with it "
        "(same config and inputs), or --overwrite to delete what it wrote and start again"
    )


def verdict(
    out_root: str, identity: dict[str, str], parts: tuple[str, ...], overwrite: bool = False, resume: bool = False
) -> str:
    """What `prepare` would do with the folder, in a sentence, found by the same checks (raising the
    same OutputError) but writing and deleting nothing: the dry run's answer for the real run."""
    if overwrite and resume:
        raise _both_error()
    existing = holds_run(out_root, parts)
    if not existing:
        return "holds no run: the run starts fresh" + (" (nothing to resume)" if resume else "")
    if not (resume or overwrite):
        raise _holds_run_error(out_root, existing)
    if overwrite:
        ours, left = plan_clear(out_root, parts)
        shown = ", ".join(left[:5]) + (", ..." if len(left) > 5 else "")
        stay = f"; {_files(len(left))} it did not write stay ({shown})" if left else ""
        return f"holds a run: --overwrite would delete the {_files(len(ours))} it wrote{stay}"
    prepared = _resumable(out_root, identity, tidy=False)
    if prepared.finished is not None:
        return "holds the same run, finished: --resume would run nothing (its manifest stands)"
    scored = len(prepared.spooled - prepared.committed)
    return (
        f"holds the same run, interrupted: --resume would skip its {len(prepared.committed)} committed units"
        f" and commit {scored} scored ones without scoring them again; the other units run"
    )


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _done_units(fs: Any, root: str, pattern: str) -> frozenset[int]:
    found = set()
    for path in fs.glob(join(root, pattern)):
        m = _PART.fullmatch(posixpath.basename(path).removesuffix(".json"))
        if m:
            found.add(int(m.group(1)))
    return frozenset(found)


def _refuse_changed(out_root: str, stored: dict[str, str], identity: dict[str, str]) -> None:
    changed = [k for k, v in identity.items() if stored.get(k) != v]
    if changed:
        raise OutputError(
            f"--resume: {', '.join(_WHAT[k] for k in changed)} differ from the run's in {out_root}; "
            "resume with the same ones, or pass --overwrite to start again"
        )


def _resumable(out_root: str, identity: dict[str, str], tidy: bool = True) -> Prepared:
    """`tidy`: remove the half-written files a kill left (false for a read-only check)."""
    fs, root = _fs(out_root)
    state_path = join(root, layout.RUN_STATE)
    manifest_path = join(root, layout.MANIFEST)
    if not fs.exists(state_path):
        if fs.exists(manifest_path):  # a finished run: nothing left to do, if it is the same run
            manifest = _read_json(fs, manifest_path)
            _refuse_changed(out_root, {"corpus": manifest.get("corpus"), **manifest.get("identity", {})}, identity)
            return Prepared(finished=manifest)
        raise OutputError(
            f"output {out_root} holds no run that can be resumed (no {layout.RUN_STATE}); "
            "pass --overwrite to start again"
        )
    state = _read_json(fs, state_path)
    _refuse_changed(out_root, state.get("identity", {}), identity)
    meta = state["meta"]
    if fs.exists(manifest_path):
        manifest = _read_json(fs, manifest_path)
        if manifest.get("created") == meta.get("created"):  # killed while clearing its work files
            return Prepared(finished=manifest)
    if tidy:
        _remove_half_written(fs, root)
    committed = _done_units(fs, root, layout.summary_glob())
    spooled, incomplete = _spooled(fs, root)
    if incomplete - committed and committed:
        raise OutputError(
            f"--resume: units {sorted(incomplete - committed)[:10]} of {out_root} were spooled short of records "
            "and other units are committed already: reading them again would change decisions the committed "
            "units were written with; pass --overwrite to start again"
        )
    return Prepared(meta=meta, spooled=spooled, committed=committed)


def _spooled(fs: Any, root: str) -> tuple[frozenset[int], frozenset[int]]:
    """(units whose spooled marker says every record arrived, units spooled short of records: read
    again when nothing is committed yet). The markers are read in one batch (object storage)."""
    units = _done_units(fs, root, layout.spooled_glob())
    paths = {unit: join(root, layout.spooled_marker(unit)) for unit in units}
    docs = fs.cat(list(paths.values())) if paths else {}
    complete = set()
    for unit, path in paths.items():
        if json.loads(docs.get(path, b"{}")).get("complete", True):
            complete.add(unit)
    return frozenset(complete), frozenset(units - complete)


def _remove_half_written(fs: Any, root: str) -> None:
    """Temporary files of atomic writes a kill interrupted: never a finished file, always ours."""
    for path in fs.find(root):
        rel = posixpath.relpath(path, root)
        if rel.split("/", 1)[0] != layout.OVERLAYS and _TMP.fullmatch(posixpath.basename(rel)):
            fs.rm(path)


def write_state(out_root: str, identity: dict[str, str], meta: dict[str, Any]) -> None:
    state = {"format": STATE_FORMAT, "identity": identity, "meta": meta}
    atomic_write(join(out_root, layout.RUN_STATE), json_bytes(state))


# ------------------------------------------------------------------------------------------ overwrite


def _listed(fs: Any, root: str) -> set[str]:
    """Files (relative to the root) the run's summaries and manifest say it wrote."""
    rel: set[str] = set()
    docs = [_read_json(fs, p) for p in fs.glob(join(root, layout.summary_glob()))]
    if fs.exists(join(root, layout.MANIFEST)):
        docs.append(_read_json(fs, join(root, layout.MANIFEST)))
    for doc in docs:
        for entries in doc.get("files", {}).values():
            for entry in entries:
                rel.add(entry["path"])
                if isinstance(entry.get("index"), dict):
                    rel.add(entry["index"]["path"])
    return rel


def _units_of(fs: Any, root: str) -> set[int]:
    path = join(root, layout.UNITS)
    try:
        return {int(u["index"]) for u in _read_json(fs, path)}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _ours(rel: str, listed: set[str], units: set[int], summarized: set[int], parts: tuple[str, ...]) -> bool:
    top = rel.split("/", 1)[0]
    if top == layout.OVERLAYS:
        return False
    if _TMP.fullmatch(rel) and not _UNIT_FILE.fullmatch(posixpath.basename(rel)):  # manifest.json.tmp-...
        return _ours(rel.rsplit(".tmp-", 1)[0], listed, units, summarized, parts)
    if rel in listed or rel in (layout.MANIFEST, layout.UNITS, layout.METRICS) or top in (layout.WORK, layout.SPOOL):
        return True
    if top in layout.REPORTS:
        return True
    if top not in (*layout.CORE_PARTS, *parts):
        return False
    if top in parts and "/" in rel and _CONTENT_FILE.fullmatch(posixpath.basename(rel)):
        return True
    # A unit's file of a run killed before the unit's summary listed it, or a half-written one.
    m = _UNIT_FILE.fullmatch(posixpath.basename(rel))
    if m is None or int(m.group(1)) not in units:
        return False
    return top == layout.SUMMARIES or int(m.group(1)) not in summarized or bool(m.group(2))


def plan_clear(out_root: str, parts: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(the files `clear_run` would delete, those it would leave), relative to the root; reads only."""
    fs, root = _fs(out_root)
    listed, units = _listed(fs, root), _units_of(fs, root)
    summarized = set(_done_units(fs, root, layout.summary_glob()))
    ours, left = [], []
    for path in sorted(fs.find(root)):
        rel = posixpath.relpath(path, root)
        if _ours(rel, listed, units, summarized, parts):
            ours.append(rel)
        elif rel.split("/", 1)[0] != layout.OVERLAYS:
            left.append(rel)
    return ours, left


def clear_run(out_root: str, parts: tuple[str, ...]) -> list[str]:
    """Delete what an earlier run wrote in `out_root`; return the other files, left in place.

    The manifest and the run state go first: a clearing that is itself killed leaves no folder that
    `--resume` would take for a finished or resumable run."""
    fs, root = _fs(out_root)
    listed, units = _listed(fs, root), _units_of(fs, root)
    summarized = set(_done_units(fs, root, layout.summary_glob()))
    first = (layout.MANIFEST, layout.RUN_STATE)
    paths = sorted(fs.find(root), key=lambda p: (posixpath.relpath(p, root) not in first, p))
    left, emptied = [], set()
    for path in paths:
        rel = posixpath.relpath(path, root)
        if _ours(rel, listed, units, summarized, parts):
            fs.rm(path)
            emptied.add(posixpath.dirname(path))
        elif rel.split("/", 1)[0] != layout.OVERLAYS:
            left.append(rel)
    remove_work(out_root)  # all ours, empty folders a kill left included
    _remove_emptied_dirs(fs, root, emptied)
    return sorted(left)


def remove_work(out_root: str) -> None:
    """The folders a run in progress keeps (`_work/`, `_spool/`): gone once its manifest is written."""
    for part in (layout.SPOOL, layout.WORK):
        fs, path = _fs(join(out_root, part))
        if fs.exists(path):
            fs.rm(path, recursive=True)


def _remove_emptied_dirs(fs: Any, root: str, emptied: set[str]) -> None:
    """The folders this clearing emptied (and their parents it emptied in turn), not the root."""
    stop = root.rstrip("/")
    for d in sorted(emptied, key=len, reverse=True):
        while d.rstrip("/") != stop and d.startswith(stop) and fs.isdir(d) and not fs.ls(d, detail=False):
            fs.rmdir(d)
            d = posixpath.dirname(d)
