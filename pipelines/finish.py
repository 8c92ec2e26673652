"""The one finish path every corpus ends with, in two phases, with no media bytes in any shuffle.

    records ── 'SpoolUnits' (phase 1, pipelines/spool.py: per unit, media to the spool, records to a
               part file, the "spooled" marker) ── unit indexes
      ─┬─ 'RankValues' ── 'Cutoffs' (run-wide `top_fraction` cutoffs) ─────────────┐ side input
       ├─ 'DedupKeys' (small keys of the pending records) ── 'Dedup' ─┐             │
       └─ 'KeyUnits' ─────────────────────────────────────────── 'GroupByUnit' ─ 'CommitUnits' ─ 'WriteManifest'

Phase 2 works unit by unit from the spool: it applies the thresholds that needed the run's cutoffs,
the corpus's settling before dedup (`Corpus.before_dedup`), the duplicate decisions, settles
families (children of a settled parent through `Corpus.settle_children`, then pending children
are kept, then each pending parent from its children through `Corpus.settle_parent`), keeps what is
still pending, and commits the unit: the sample kind's kept records as shards (their bytes read
from the spool) with an index each, every kind's ledger and drop/quarantine tables, the corpus's
own unit outputs, and last the unit's summary under `summaries/` (the "committed" marker).
'WriteManifest' folds the summaries it finds on storage (never a list in memory) and checks one
identity per record kind: input = kept + dropped + quarantined, where the input of the kind read
from the inputs is what the reader counted, and the input of a child kind is what its parents say
they made.

A resumed run (`--resume`) reads only the units with no "spooled" marker, and commits only those
with no summary; the others still give their keys and scores to dedup and cutoffs from the spool,
so every decision, and every output byte, is the one an uninterrupted run makes.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import apache_beam as beam
import fsspec
import pyarrow as pa

from mmcurate.schemas import SCHEMA_VERSION, Fields, Record, Status
from mmcurate.stages import dedup
from mmcurate.stages.writers import atomic_write, join, json_bytes, write_json, write_shards, write_table

from . import corpus as corpora
from . import layout
from .counters import count
from .resume import remove_work
from .spool import SpoolUnits, failpoint, load_unit
from .thresholds import Cutoffs, Decider

if TYPE_CHECKING:
    from mmcurate.stages.minhash import MinHashParams

MANIFEST_FORMAT = "mmcurate.manifest/2"
STATUSES = (Status.KEPT.value, Status.DROPPED.value, Status.QUARANTINED.value)
FILE_KEYS = ("shards", "ledger", "dropped", "quarantined", "outputs")


class AccountingError(RuntimeError):
    """Records went missing: for some kind, input != kept + dropped + quarantined."""


@dataclass(frozen=True)
class Run:
    """What the finish path needs to know of a run, beside the corpus and its config."""

    corpus: str
    out_root: str
    units: int
    fields: dict[str, Fields]
    meta: dict[str, Any] = field(default_factory=dict)
    """The manifest's header: created, code and config (redacted), inputs, lineage."""
    groups: dict[int, str] = field(default_factory=dict)
    """Unit -> the --input it came from (`top_fraction ... per: input` cuts per group)."""
    spooled: frozenset[int] = frozenset()
    """Units spooled by an earlier attempt (`--resume`): not read again."""
    committed: frozenset[int] = frozenset()
    """Units committed by an earlier attempt (`--resume`): not written again."""

    def to_read(self, units: list[Any]) -> list[Any]:
        """The units the recipe still has to read and score."""
        return [u for u in units if u.index not in self.spooled]


# --------------------------------------------------------------------------------------------- dedup


class Dedup(beam.PTransform):
    """Dedup keys of pending records -> (unit, Duplicate) for each one to drop as an exact or near
    duplicate, run-wide. Near: by the perceptual hash, and (`semantic_distance`) by the semantic
    hash; a record near a better one by either points at the best of all of them."""

    def __init__(self, params: dedup.DedupParams, text: MinHashParams | None = None) -> None:
        super().__init__()
        self.params, self.text = params, text

    def expand(self, keys: beam.PCollection) -> beam.PCollection:
        by_exact = (
            keys
            | "KeyByExact" >> beam.Map(lambda k: (k.exact, dedup.compact(k)))
            | "GroupExact" >> beam.GroupByKey()
            | "Restore" >> beam.MapTuple(lambda exact, group: [dedup.restore(t, exact) for t in group])
        )
        found = [by_exact | "ExactDuplicates" >> beam.FlatMap(dedup.exact_duplicates)]
        if self.params.near:
            dist, semantic = self.params.max_distance, self.params.semantic_distance
            reps = by_exact | "ExactRepresentatives" >> beam.Map(min)
            near = (
                reps
                | "WithNearHash" >> beam.Filter(lambda k: k.near is not None)
                | "Bands" >> beam.FlatMap(dedup.near_entries, dist)
                | "GroupBands" >> beam.GroupByKey()
                | "NearInBand" >> beam.FlatMapTuple(lambda _, group: dedup.near_in_band(group, dist))
            )
            if semantic is not None:  # the same banding over the semantic hash, with its own distance
                similar = (
                    reps
                    | "SemanticBands" >> beam.FlatMap(dedup.semantic_entries, semantic)
                    | "GroupSemanticBands" >> beam.GroupByKey()
                    | "SemanticInBand" >> beam.FlatMapTuple(lambda _, group: dedup.near_in_band(group, semantic))
                )
                near = (near, similar) | "NearAndSemantic" >> beam.Flatten()
            found.append(
                near
                | "KeyByRecord" >> beam.Map(lambda d: (d.uid, d))
                | "BestRepresentative" >> beam.CombinePerKey(dedup.best_duplicate)
                | "DropKey" >> beam.Values()
            )
        if self.text is not None and self.text.enabled:
            found.append(by_exact | "TextNearDuplicates" >> TextDedup(self.text))
        return found | "AllDuplicates" >> beam.Flatten() | "KeyDupByUnit" >> beam.Map(lambda d: (d.unit, d))


class TextDedup(beam.PTransform):
    """Exact representatives with a MinHash signature -> Duplicates of near-duplicate text: LSH bands
    give the candidates, the estimated Jaccard decides, the best-ranked similar record is kept."""

    def __init__(self, params: MinHashParams) -> None:
        super().__init__()
        self.params = params

    def expand(self, by_exact: beam.PCollection) -> beam.PCollection:
        from mmcurate.stages import minhash

        params = self.params
        return (
            by_exact
            | "Representatives" >> beam.Map(min)
            | "WithSignature" >> beam.Filter(lambda k: k.sig is not None)
            | "Bands" >> beam.FlatMap(lambda k: [(band, dedup.compact(k)) for band in minhash.band_keys(k.sig, params)])
            | "GroupBands" >> beam.GroupByKey()
            | "SimilarInBand"
            >> beam.FlatMapTuple(
                lambda _, group: minhash.near_text_duplicates(map(dedup.restore, group), params.threshold)
            )
            | "KeyByRecord" >> beam.Map(lambda d: (d.uid, d))
            | "BestRepresentative" >> beam.CombinePerKey(dedup.best_duplicate)
            | "DropKey" >> beam.Values()
        )


# ------------------------------------------------------------------------------------------ settling


def _apply_duplicates(by_kind: dict[str, list[Record]], dups: Iterable[dedup.Duplicate]) -> None:
    decisions = {d.uid: d for d in dups}
    for records in by_kind.values():
        for rec in records:
            d = decisions.get(rec.uid)
            if d is not None and rec.pending:
                rec.settle(d.reason, duplicate_of=d.duplicate_of)


def _settle_family(
    corpus: corpora.Corpus, parent: Record | None, children: list[Record], puid: str, config: Any
) -> None:
    """Children of one parent: from a settled parent first (corpus hook), then pending ones are kept."""
    if parent is None:
        for child in children:
            if child.pending:
                child.settle("internal_error", f"no {type(child).parent_kind} record {puid} in this unit")
    elif not parent.pending:
        corpus.settle_children(parent, children, config)
    for child in children:
        if child.pending:
            child.keep()


def _settle_kind(corpus: corpora.Corpus, cls: type[Record], by_kind: dict[str, list[Record]], config: Any) -> None:
    assert cls.parent_kind is not None
    parents = {p.uid: p for p in by_kind.get(cls.parent_kind, [])}
    families: dict[str, list[Record]] = collections.defaultdict(list)
    for child in by_kind.get(cls.kind, []):
        families[child.parent_uid or ""].append(child)
    for puid, children in families.items():
        _settle_family(corpus, parents.get(puid), children, puid, config)
    for puid, parent in parents.items():
        if parent.pending:
            corpus.settle_parent(parent, families.get(puid, []), config)


def settle_unit(
    corpus: corpora.Corpus, by_kind: dict[str, list[Record]], dups: Iterable[dedup.Duplicate], config: Any = None
) -> None:
    """Every record of one unit ends kept, dropped or quarantined (see the module docstring)."""
    _apply_duplicates(by_kind, dups)
    for cls in corpus.kinds:
        if cls.parent_kind is not None:
            _settle_kind(corpus, cls, by_kind, config)
    for records in by_kind.values():
        for rec in records:
            if rec.pending:
                rec.keep()


def inputs_by_kind(corpus: corpora.Corpus, by_kind: dict[str, list[Record]], read: int) -> dict[str, int]:
    """The input side of each identity: the reader's count for the primary kind, else what parents made."""
    made: collections.Counter = collections.Counter()
    for records in by_kind.values():
        for rec in records:
            made.update(rec.expected_children())
    return {cls.kind: read if cls.kind == corpus.primary else made.get(cls.kind, 0) for cls in corpus.kinds}


def kind_section(records: list[Record], n_input: int) -> dict[str, Any]:
    statuses = collections.Counter(r.fate.status.value for r in records)
    return {
        "counts": {"input": n_input, **{s: statuses.get(s, 0) for s in STATUSES}},
        "reasons": {
            s: dict(sorted(collections.Counter(r.fate.reason for r in records if r.fate.status.value == s).items()))
            for s in layout.FATE_DIRS
        },
    }


FATE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("uid", pa.string()),
        pa.field("source", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("error", pa.string()),
        pa.field("duplicate_of", pa.string()),
    ]
)


def fate_table(records: Iterable[Record]) -> pa.Table:
    rows = [
        {
            "id": r.id,
            "uid": r.uid,
            "source": r.source.ref(),
            "reason": r.fate.reason,
            "error": r.fate.error,
            "duplicate_of": r.fate.duplicate_of,
        }
        for r in records
    ]
    return pa.Table.from_pylist(rows, schema=FATE_SCHEMA)


def _count_fates(kind: str, section: dict[str, Any]) -> None:
    counts = section["counts"]
    count(f"{kind}.input", counts["input"])
    count(f"{kind}.kept", counts["kept"])
    for status, reasons in section["reasons"].items():
        for code, n in reasons.items():
            count(f"{kind}.{status}.{code}", n)


class _SpooledUnitFn(beam.DoFn):
    """Base of the phase-2 steps: one spooled unit's records, decided as far as dedup."""

    def __init__(self, corpus: str, run: Run, config: Any) -> None:
        self.corpus_name, self.run, self.config = corpus, run, config

    def setup(self) -> None:
        self.corpus = corpora.get(self.corpus_name)
        self.decider = Decider(self.config, self.corpus.decides, self.run.groups).setup()

    def load(self, unit: int, cutoffs: dict[str, float]) -> tuple[dict[str, list[Record]], dict[str, Any]]:
        """The unit's records by kind (input order): the thresholds that waited for the run's
        cutoffs applied, then the corpus's settling before dedup."""
        records, report = load_unit(self.run.out_root, unit)
        by_kind: dict[str, list[Record]] = {cls.kind: [] for cls in self.corpus.kinds}
        for rec in records:
            try:
                rec = self.decider.final(rec, cutoffs)
            except Exception as exc:  # this record only
                rec.settle("internal_error", f"apply_thresholds: {type(exc).__name__}: {exc}", stage="apply_thresholds")
            by_kind.setdefault(rec.kind, []).append(rec)
        self.corpus.before_dedup(by_kind, self.config)
        return by_kind, report


class RankValuesFn(beam.DoFn):
    """Spooled unit -> the (cutoff key, score) pairs its records add to run-wide cutoffs."""

    def __init__(self, out_root: str) -> None:
        self.out_root = out_root

    def process(self, unit: int) -> Iterator[tuple[str, float]]:
        records, _ = load_unit(self.out_root, unit)
        for rec in records:
            yield from rec.rank or ()


class DedupKeysFn(_SpooledUnitFn):
    """Spooled unit -> the dedup keys of its records still pending (the little dedup needs)."""

    def process(self, unit: int, cutoffs: dict[str, float] | None = None) -> Iterator[dedup.DedupKey]:
        by_kind, _ = self.load(unit, cutoffs or {})
        for records in by_kind.values():
            for rec in records:
                key = rec.dedup_key() if rec.pending else None
                if key is not None:
                    yield key


class CommitUnitFn(_SpooledUnitFn):
    """(unit, {dups}) -> shards, ledgers, fate tables, corpus outputs, and last the unit's summary;
    then the unit's spool files go (the spool holds only uncommitted units)."""

    def setup(self) -> None:
        super().setup()
        self.shard = self.corpus.shard(self.config)

    def process(self, element: tuple[int, dict[str, list]], cutoffs: dict[str, float] | None = None) -> Iterator[int]:
        unit, grouped = element
        # committed by an earlier attempt of this run (--resume), or by a retried bundle's first try,
        # whose outputs stand: its spool may be gone already (released below)
        if unit in self.run.committed or self._committed_before(unit):
            self._release(unit)  # a kill may have come between the summary and the release
            yield unit
            return
        by_kind, read = self.load(unit, cutoffs or {})
        settle_unit(self.corpus, by_kind, grouped.get("dups", ()), self.config)
        media = self.corpus.fetch_media(by_kind, self.run, self.config)
        not_read = read.get("not_read", 0)  # past a read limit: in the input, not in any record
        held = read["expected"] - not_read if read["expected"] is not None else read["produced"]
        inputs = inputs_by_kind(self.corpus, by_kind, held)
        files: dict[str, list[dict]] = {k: [] for k in FILE_KEYS}
        shards = self._write_samples(unit, by_kind, files)
        kinds = {}
        for kind, records in by_kind.items():
            kinds[kind] = kind_section(records, inputs[kind])
            _count_fates(kind, kinds[kind])
            self._write_tables(unit, kind, records, files)
        outputs, extras = self.corpus.unit_outputs(unit, by_kind, shards, self.run, self.config, media)
        files["outputs"] += [f.to_dict() for f in outputs]
        for records in by_kind.values():  # what waited for the shards and the corpus's outputs
            for rec in records:
                rec.clear_payload()
        summary = {"unit": unit, "kinds": kinds, "files": files, "extras": extras, "read": read}
        atomic_write(join(self.run.out_root, layout.summary(unit)), json_bytes(summary))
        self._release(unit)  # its shards and outputs are durable: its spool files go
        count("units.written")
        failpoint("committed", self.run.out_root)
        yield unit

    def _committed_before(self, unit: int) -> bool:
        """The unit's summary is on storage though it was not committed when the run started: a
        runner retried the bundle after writing it. Its counts are counted again (a runner keeps
        no metrics of a failed attempt); the unit is not written twice."""
        try:
            with fsspec.open(join(self.run.out_root, layout.summary(unit)), "rb") as f:
                summary = json.loads(f.read())
        except FileNotFoundError:
            return False
        for kind, section in summary["kinds"].items():
            _count_fates(kind, section)
        count("units.written")
        return True

    def _release(self, unit: int) -> None:
        """The shared spool of a committed unit (`_spool/part-UUUUU/`), then the corpus's own."""
        corpora.remove_tree(join(self.run.out_root, layout.SPOOL, layout.part(unit)))
        self.corpus.release(unit, self.run, self.config)

    def _write_samples(self, unit: int, by_kind: dict[str, list[Record]], files: dict[str, list]) -> list:
        kind = self.corpus.sample_kind
        if kind is None or self.shard is None:
            return []
        kept = [r for r in by_kind[kind] if r.fate.status == Status.KEPT]
        shards = write_shards(kept, unit, self.run.out_root, self.shard, self.run.fields[kind])
        files["shards"] += [s.to_dict() for s in shards]
        return shards

    def _write_tables(self, unit: int, kind: str, records: list[Record], files: dict[str, list]) -> None:
        if not records:
            return
        table = type(records[0]).to_table(records, self.run.fields[kind])
        files["ledger"].append(write_table(self.run.out_root, layout.ledger(kind, unit), table).to_dict())
        for status in layout.FATE_DIRS:
            rows = [r for r in records if r.fate.status.value == status]
            if rows:
                info = write_table(self.run.out_root, layout.fates(status, kind, unit), fate_table(rows))
                files[status].append(info.to_dict())


class Finish(beam.PTransform):
    """Phase 1 (spool every unit), then phase 2 over spooled units: cutoffs, dedup, commit, manifest."""

    def __init__(self, corpus: str, run: Run, config: Any) -> None:
        super().__init__()
        self.corpus, self.run, self.config = corpus, run, config

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        run, corpus = self.run, corpora.get(self.corpus)
        spooled = records | "SpoolUnits" >> SpoolUnits(self.corpus, run.out_root)
        if run.spooled:
            before = records.pipeline | "SpooledBefore" >> beam.Create(sorted(run.spooled))
            spooled = (spooled, before) | "AllSpooled" >> beam.Flatten()
        units = spooled | "SpreadUnits" >> beam.Reshuffle()
        side: dict[str, Any] = {}
        decider = Decider(self.config, corpus.decides, run.groups).setup()
        if decider.deferred:
            values = units | "RankValues" >> beam.ParDo(RankValuesFn(run.out_root))
            side["cutoffs"] = beam.pvalue.AsDict(values | "Cutoffs" >> Cutoffs(decider.filters))
        grouped: dict[str, beam.PCollection] = {"unit": units | "KeyUnits" >> beam.Map(lambda u: (u, None))}
        params = corpus.dedup(self.config)
        if params is not None:
            keys = units | "DedupKeys" >> beam.ParDo(DedupKeysFn(self.corpus, run, self.config), **side)
            grouped["dups"] = keys | "Dedup" >> Dedup(params, corpus.text_dedup(self.config))
        return (
            grouped
            | "GroupByUnit" >> beam.CoGroupByKey()
            | "CommitUnits" >> beam.ParDo(CommitUnitFn(self.corpus, run, self.config), **side)
            | "CountUnits" >> beam.combiners.Count.Globally()
            | "WriteManifest" >> beam.Map(write_manifest, run=self.run, corpus=self.corpus, config=self.config)
        )


# ------------------------------------------------------------------------------------------ manifest


def load_summaries(out_root: str, units: int) -> tuple[list[dict], list[int]]:
    """The unit summaries on storage, in unit order, and the units that have none."""
    summaries, missing = [], []
    for unit in range(units):
        uri = join(out_root, layout.summary(unit))
        try:
            with fsspec.open(uri, "rb") as f:
                summaries.append(json.loads(f.read()))
        except FileNotFoundError:
            missing.append(unit)
    return summaries, missing


def fold_kinds(summaries: list[dict], run: Run) -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = {}
    for s in summaries:
        for kind, sec in s["kinds"].items():
            into = kinds.setdefault(
                kind,
                {"counts": collections.Counter(), "reasons": {st: collections.Counter() for st in layout.FATE_DIRS}},
            )
            into["counts"].update(sec["counts"])
            for st in layout.FATE_DIRS:
                into["reasons"][st].update(sec["reasons"][st])
    out = {}
    for kind in run.fields:
        sec = kinds.get(kind, {"counts": collections.Counter(), "reasons": {st: {} for st in layout.FATE_DIRS}})
        counts = {k: sec["counts"].get(k, 0) for k in ("input", *STATUSES)}
        out[kind] = {
            "counts": counts,
            "reasons": {st: dict(sorted(sec["reasons"][st].items())) for st in layout.FATE_DIRS},
            "accounting_ok": counts["input"] == sum(counts[s] for s in STATUSES),
            "fields": run.fields[kind].to_dict(),
        }
    return out


def build_manifest(summaries: list[dict], missing: list[int], run: Run, corpus: corpora.Corpus, config: Any) -> dict:
    """Fold unit summaries into the manifest and check every identity exactly."""
    kinds = fold_kinds(summaries, run)
    files: dict[str, list] = {k: [f for s in summaries for f in s["files"][k]] for k in FILE_KEYS}
    shards = files["shards"]
    manifest = {
        "format": MANIFEST_FORMAT,
        "schema_version": SCHEMA_VERSION,
        **run.meta,
        "accounting_ok": not missing and all(k["accounting_ok"] for k in kinds.values()),
        "kinds": kinds,
        "totals": {
            "shards": len(shards),
            "samples": sum(s["samples"] for s in shards),
            "bytes": sum(s["bytes"] for s in shards),
        },
        "files": files,
        "extras": corpus.fold_extras([s["extras"] for s in summaries], config),
    }
    manifest.update(read_damage(summaries))
    limit = limit_section(summaries, run, config, kinds[corpus.primary]["counts"]["input"])
    if limit is not None:
        manifest["limit"] = limit
        if limit["not_read"] or limit.get("not_read_exact") is False:  # some of the inputs were never read
            manifest["inputs_fully_read"] = False
    if missing:
        manifest["units_missing"] = missing
    return manifest


def limit_section(summaries: list[dict], run: Run, config: Any, read: int) -> dict[str, Any] | None:
    """What a `--limit` left unread: {records_per_input, read, not_read, held}, with `"not_read_exact":
    false` where a tar's rest could not be counted to its end (`held` is then a lower bound). A select
    run reads its parent's ledger, not the inputs: it carries the parent's section, `"from_parent": true`."""
    lineage = run.meta.get("lineage") or {}
    if lineage.get("parent_run"):  # select put the parent manifest's section in the lineage
        parent = lineage.get("parent_limit")
        return None if parent is None else {**parent, "from_parent": True}
    limit = getattr(getattr(config, "read", None), "limit", None)
    if limit is None:
        return None
    reports = [s.get("read", {}) for s in summaries]
    not_read = sum(r.get("not_read", 0) for r in reports)
    section: dict[str, Any] = {"records_per_input": limit, "read": read, "not_read": not_read, "held": read + not_read}
    if any(r.get("not_read_unknown") for r in reports):
        section["not_read_exact"] = False
    return section


IGNORED_NAMES = 100


def read_damage(summaries: list[dict]) -> dict[str, Any]:
    """What the inputs held but could not be read as records: damaged byte ranges (each stands as one
    quarantined record; how many records it held is said where known, else "unknown"), and the files
    beside the media that are not records (counted, the first names listed)."""
    damage = [{**d, "unit": s["unit"]} for s in summaries for d in s.get("read", {}).get("damage", [])]
    ignored = [name for s in summaries for name in s.get("read", {}).get("ignored", [])]
    return {
        "inputs_fully_read": not damage,
        "unreadable_remainder": damage,
        "ignored_files": {"count": len(ignored), "names": ignored[:IGNORED_NAMES]},
    }


def write_manifest(_units_written: int, run: Run, corpus: str, config: Any) -> dict:
    """Fold the summaries on storage into manifest.json; the run fails when an identity does not hold."""
    c = corpora.get(corpus)
    summaries, missing = load_summaries(run.out_root, run.units)
    manifest = build_manifest(summaries, missing, run, c, config)
    manifest["files"]["run"] = [f.to_dict() for f in c.run_outputs(run, config)]
    write_json(run.out_root, layout.MANIFEST, manifest)
    remove_work(run.out_root)  # the run is done: what it waited on goes
    if not manifest["accounting_ok"]:
        counts = {k: v["counts"] for k, v in manifest["kinds"].items()}
        raise AccountingError(f"records went missing: {json.dumps(counts)}; units without a summary: {missing}")
    return manifest
