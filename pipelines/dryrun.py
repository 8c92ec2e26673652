"""`--dry-run`: what a run would read and where it would write, found without writing anything.

The config and the models are checked by the caller (the same checks a run makes first); here the
units are listed with the records each holds where that is cheap to know (a jsonl slice's lines were
counted when the units were listed, a parquet file's footer says its rows, a folder slice its
files; a tar says only when read), and the output folder is judged as the run will judge it: the run's
identity is computed the same way and `resume.verdict` makes `prepare`'s checks without writing, so a
command line the run would refuse (a folder holding a run and no flag, `--resume` with a changed
config) fails here too, with the run's error.
"""

from __future__ import annotations

from typing import Any

from mmcurate.schemas.redact import redact_text
from mmcurate.stages.io import Unit

from .common import code_version
from .corpus import Corpus
from .resume import holds_run, run_identity, verdict


def tar_groups(uri: str) -> int | None:
    """Member groups (webdataset samples: members sharing a key) of an uncompressed tar, from its
    headers alone (the payloads are seeked over); None for a compressed or unreadable tar."""
    import posixpath
    import tarfile

    import fsspec

    if not uri.endswith(".tar") or ("://" in uri and not uri.startswith("file://")):
        return None  # on object storage the header walk would fetch the whole file: not cheap
    try:
        with fsspec.open(uri, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            groups, last = 0, None
            for member in tar:
                folder, name = posixpath.split(member.name)
                if not member.isfile() or name.startswith(".") or "." not in name:
                    continue  # what webdataset skips: hidden files (`._x.jpg`) and names with no extension
                key = posixpath.join(folder, name.split(".", 1)[0])
                groups, last = groups + (key != last), key
            return groups
    except Exception:  # a damaged tar: the run resyncs over it and counts; the plan cannot
        return None


def records_held(unit: Unit, tars: bool = False) -> int | None:
    """The records a unit holds, where knowing it costs no more than a footer read (or, with `tars`,
    a scan of a tar's headers); None where it does not."""
    if unit.kind == "wds" and tars:
        return tar_groups(unit.uri)
    if unit.kind in ("jsonl", "lines"):
        return unit.stop - unit.start if unit.stop >= 0 else None
    if unit.kind in ("folder", "videos"):
        return len(unit.files)
    if unit.kind == "parquet":
        import fsspec
        import pyarrow.parquet as pq

        try:
            with fsspec.open(unit.uri, "rb") as f:
                return pq.ParquetFile(f).metadata.num_rows
        except Exception:  # an unreadable file: the run will quarantine it; the plan just cannot count
            return None
    return None


def plan(
    corpus: Corpus,
    config: Any,
    units: list[Unit],
    out_root: str,
    lineage: dict | None = None,
    overwrite: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """What the run would read and do to its output; raises the OutputError the run would raise.
    `lineage` as the run is given it (`Corpus.lineage`): it is part of the identity `--resume` checks."""
    identity = run_identity(corpus.name, config, units, code_version(), lineage)
    output_verdict = verdict(out_root, identity, corpus.outputs, overwrite=overwrite, resume=resume)
    rows = [{"unit": u.index, "kind": u.kind, "uri": redact_text(u.uri), "records": records_held(u)} for u in units]
    known = [r["records"] for r in rows if r["records"] is not None]
    limit = getattr(getattr(config, "read", None), "limit", None)
    return {
        "corpus": corpus.name,
        "units": rows,
        "records_known": sum(known),
        "units_uncounted": len(rows) - len(known),
        "limit": limit,
        "output": redact_text(out_root),
        "output_holds": holds_run(out_root, corpus.outputs),
        "verdict": redact_text(output_verdict),
    }


def print_plan(
    corpus: Corpus,
    config: Any,
    units: list[Unit],
    out_root: str,
    lineage: dict | None = None,
    overwrite: bool = False,
    resume: bool = False,
    shown: int = 50,
) -> dict[str, Any]:
    """Print the plan (the first `shown` units, then the totals, then what the run would do to its
    output); return it. Nothing is printed when the run would be refused: its OutputError is raised."""
    from rich.console import Console
    from rich.table import Table

    p = plan(corpus, config, units, out_root, lineage, overwrite=overwrite, resume=resume)
    table = Table(title=f"{corpus.name}: dry run, {len(units)} units (nothing written)")
    for col in ("unit", "kind", "input", "records"):
        table.add_column(col, justify="right" if col in ("unit", "records") else "left")
    for r in p["units"][:shown]:
        table.add_row(str(r["unit"]), r["kind"], r["uri"], "?" if r["records"] is None else str(r["records"]))
    console = Console()
    console.print(table)
    if len(units) > shown:
        console.print(f"... and {len(units) - shown} more units")
    uncounted = f" (+ {p['units_uncounted']} tar units, counted only when read)" if p["units_uncounted"] else ""
    console.print(f"records in the inputs: {p['records_known']}{uncounted}")
    if p["limit"] is not None:
        console.print(f"--limit {p['limit']}: at most {p['limit']} records read per input file")
    console.print(f"config and models: ok. output {p['output']} {p['verdict']}")
    return p
