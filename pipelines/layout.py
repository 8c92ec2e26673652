"""The output layout, decided once for every corpus.

```
OUT/
  shards/part-UUUUU-NNNN.tar             webdataset samples (only tars: load_dataset("webdataset", data_dir=...))
  index/part-UUUUU-NNNN.parquet          one row per sample of the shard of the same name
  ledger/{kind}/part-UUUUU.parquet       every record of that kind, whatever its fate
  dropped/{kind}/part-UUUUU.parquet      id, uid, source, reason, error, duplicate_of
  quarantined/{kind}/part-UUUUU.parquet
  overlays/{name}/*.parquet              later facts about records, joined by id (append-only)
  summaries/part-UUUUU.json              one per unit written: counts, files, extras (the manifest folds them)
  manifest.json  units.json  metrics.json
  _work/  _spool/                        a run in progress (markers, spooled records, media); gone with the manifest
  report/  report-compare/               the run report (written after the manifest, never listed in it)
  + the corpus's own outputs (annotation/, rl/, sft/, ...)
```
"""

from __future__ import annotations

from mmcurate.schemas import Status

SHARDS = "shards"
INDEX = "index"
LEDGER = "ledger"
OVERLAYS = "overlays"
SUMMARIES = "summaries"
SPOOL = "_spool"
"""Media that wait between a record's processing and its unit's commit (encoded images, clip files);
a unit's are removed once its summary is durable (a retried commit of that unit finds the summary
and writes nothing), what is left goes with the manifest."""
WORK = "_work"
"""A run in progress: its identity (`run.json`, what `--resume` checks) and the spooled units."""
RUN_STATE = f"{WORK}/run.json"
MANIFEST = "manifest.json"
UNITS = "units.json"
METRICS = "metrics.json"
FATE_DIRS = (Status.DROPPED.value, Status.QUARANTINED.value)

REPORTS = ("report", "report-compare")
"""The run's report pages (mmcurate/report/): views of a finished run, never in its manifest, yet the
run's own: `--overwrite` removes them with the rest."""
CORE_PARTS = (SHARDS, INDEX, LEDGER, *FATE_DIRS, OVERLAYS, SUMMARIES, SPOOL, WORK, MANIFEST, UNITS, METRICS)
"""What every run writes; a corpus adds its own (`Corpus.outputs`)."""


def part(unit: int) -> str:
    return f"part-{unit:05d}"


def ledger(kind: str, unit: int) -> str:
    return f"{LEDGER}/{kind}/{part(unit)}.parquet"


def fates(status: str, kind: str, unit: int) -> str:
    return f"{status}/{kind}/{part(unit)}.parquet"


def summary(unit: int) -> str:
    return f"{SUMMARIES}/{part(unit)}.json"


def summary_glob() -> str:
    return f"{SUMMARIES}/part-*.json"


def spooled_dir(unit: int) -> str:
    return f"{WORK}/spooled/{part(unit)}"


def spooled_marker(unit: int) -> str:
    return f"{WORK}/spooled/{part(unit)}.json"


def spooled_glob() -> str:
    return f"{WORK}/spooled/part-*.json"
