"""Push a video run's annotation queue to Label Studio and pull the answers back, through
`label-studio-sdk` only.

Push, per label family (one project each, titled `mmcurate <run> <family> <config hash>`, so a rerun
finds its project and a changed config is a new one):
- the clip files are copied out of the run's shards into the served media folder (skipped when
  there already, with the same bytes);
- tasks are imported in batches, each task's data holding its `task_key` (the stable external id:
  the clip id, `gold-N:CLIP` for a gold copy) and its predictions (the models' guesses); the
  project's keys are listed once before the first batch and again before any retry, so a push
  interrupted half-way, or a batch whose response was lost, adds nothing twice and loses nothing;
- connection errors and 5xx answers are retried with exponential backoff.

Pull exports every task with its annotations and turns each into a `ClipAnnotation`
(annotation/convert.py); tasks whose clip id is not in the run are reported and counted.
"""

from __future__ import annotations

import json
import logging
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec

from mmcurate.schemas.annotation import FAMILIES, ClipAnnotation

from .convert import ClipFrame, annotation_record
from .label_configs import COMBINED, config_hash, control_names, label_config
from .predictions import STATIC_SPEED, flow_stats, predictions
from .queue import QUEUE_DIR

log = logging.getLogger(__name__)


def queue_rows(run_root: str) -> list[dict[str, Any]]:
    """Every row of a video run's annotation queue, in unit and clip order."""
    fs, root = fsspec.core.url_to_fs(run_root)
    rows = []
    for path in sorted(fs.glob(f"{root.rstrip('/')}/{QUEUE_DIR}/part-*.jsonl")):
        with fs.open(path, "rb") as f:
            rows += [json.loads(line) for line in f.read().decode("utf-8").splitlines() if line.strip()]
    return rows


def informativeness(row: Mapping[str, Any], thresholds: Mapping[str, float]) -> float:
    """How close a clip sits to a selection threshold (smaller: a label moves the decision more):
    the least relative distance of its scores to their thresholds; inf with none to compare."""
    scores = row.get("scores") or {}
    gaps = [abs(float(scores[k]) - t) / max(abs(t), 1e-9) for k, t in thresholds.items() if k in scores]
    return min(gaps, default=float("inf"))


def ordered(rows: Sequence[Mapping[str, Any]], thresholds: Mapping[str, float]) -> list[Mapping[str, Any]]:
    """Most informative first (nearest a threshold), then queue order: a stable, total order."""
    return [r for _, _, r in sorted((informativeness(r, thresholds), i, r) for i, r in enumerate(rows))]


def shard_index(run_root: str, shard: str) -> dict[str, tuple[int, int]]:
    """member name -> (data offset, size) of one shard: its headers read once, seeking past the data."""
    with fsspec.open(f"{run_root.rstrip('/')}/{shard}", "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}


def clip_bytes(run_root: str, row: Mapping[str, Any], index: Mapping[str, tuple[int, int]] | None = None) -> bytes:
    """A clip's mp4 from the run's shard (`row["shard"]`, member `KEY.mp4`); `index` (`shard_index`)
    saves reading the shard's headers again for every clip of it."""
    index = shard_index(run_root, row["shard"]) if index is None else index
    name = f"{row['key']}.mp4"
    if name not in index:
        raise FileNotFoundError(f"{row['shard']} holds no {name}")
    offset, size = index[name]
    with fsspec.open(f"{run_root.rstrip('/')}/{row['shard']}", "rb") as f:
        f.seek(offset)
        return f.read(size)


def project_title(run_name: str, family: str, xml: str) -> str:
    return f"mmcurate {run_name} {family} {config_hash(xml)}"


def find_project(client: Any, title: str) -> int | None:
    """The id of the project with exactly this title, or None."""
    return with_retries(lambda: find_project_once(client, title), "list projects")


def find_project_once(client: Any, title: str) -> int | None:
    """One listing: the project with this title holding the most tasks (the oldest on a tie), so a
    twin made by two pushes at once, left empty, never hides the one with the answers."""
    found = [p for p in client.projects.list(title=title, request_options=ONCE) if p.title == title]
    if len(found) > 1:
        log.warning("%d Label Studio projects are titled %r; using the one with the most tasks", len(found), title)
    return min(found, key=lambda p: (-(p.task_number or 0), p.id)).id if found else None


RETRIABLE = (ConnectionError, TimeoutError, OSError)
ONCE = {"max_retries": 0}
"""Request options for every call under `with_retries`: the SDK's own retries would re-send a POST
whose answer was lost without the re-listing that keeps an import from going in twice."""


def with_retries(call: Callable[[], Any], what: str, tries: int = 8, base: float = 0.5, budget: float = 300.0) -> Any:
    """Run `call`, retrying connection errors and 5xx answers with exponential backoff, for at most
    `tries` attempts and `budget` seconds in all (a server that never comes back fails the push
    with the last error, it does not hang it). Never nest these: the inner one's budget multiplies."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    deadline = time.monotonic() + budget
    for attempt in range(tries):
        try:
            return call()
        except (httpx.TransportError, *RETRIABLE) as exc:
            err: Exception = exc
        except ApiError as exc:
            if exc.status_code is None or exc.status_code < 500:
                raise
            err = exc
        delay = base * 2**attempt
        if attempt == tries - 1 or time.monotonic() + delay > deadline:
            raise err
        log.warning("Label Studio %s failed (%s); retrying in %.1f s", what, type(err).__name__, delay)
        time.sleep(delay)
    raise AssertionError("unreachable")


@dataclass
class PushSummary:
    family: str
    project: int
    title: str
    queued: int = 0
    already: int = 0
    imported: int = 0
    batches: int = 0
    media_written: int = 0
    gold_tasks: int = 0
    """Gold copies in the mixed queue (imported now or before)."""
    missing_media: list[str] = field(default_factory=list)
    """Tasks not imported because their clip could not be read from the shards (key: error); a
    rerun imports them once the shards are back."""
    renewed: int = 0
    """Tasks already there whose presigned URL was signed again (`presign`)."""
    twins_removed: int = 0
    """Unanswered second tasks of one key found after the push and deleted (a lost import answer)."""


@dataclass
class Pusher:
    """Push settings: where clips are served from and how tasks are batched."""

    client: Any
    run_root: str
    media: Path | str
    """Where the clips go: a local folder below Label Studio's document root (a local server), or an
    object-storage URI (`s3://bucket/prefix`, `gs://...`, any fsspec filesystem) for a deployment
    that reads from there."""
    media_url: str
    """The URL prefix Label Studio serves a local `media` at, e.g. `/data/local-files/?d=media`
    (unused for object storage: the task holds the object's URI, or its presigned URL)."""
    run_name: str
    batch_size: int = 50
    overlap: int = 1
    thresholds: Mapping[str, float] = field(default_factory=dict)
    taxonomies: Mapping[str, Mapping[str, Sequence[str]]] = field(default_factory=dict)
    local_storage: bool = True
    """Attach `media` as the project's local storage (a local server); False when the media URL is
    served otherwise (cloud storage of an existing deployment)."""
    gold: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Gold answers kept on our side (clip id -> {control: answer}); copies of these clips go into
    the queue as gold tasks (`data.gold`), which pull scores annotators on and leaves out of the
    consensus. Label Studio's open-source edition has no ground-truth workflow of its own to use."""
    gold_rate: float = 0.0
    """The share of gold tasks in what push imports (0.1: one task in ten), in [0, 1)."""
    static_speed: float = STATIC_SPEED
    """The run's `motion.static_speed`: the bound the camera-motion guess's confidence is measured against."""
    presign: float = 0.0
    """Object-storage media: > 0, each task's video is a presigned HTTPS URL valid this many
    seconds (`fs.sign`); 0, the object's URI, for the project's cloud storage to resolve (Label
    Studio's S3/GCS storage with "presigned URLs" on, attached by the operator)."""
    after_batch: Callable[[str, int], None] | None = None
    """Called after each imported batch (family, batch number): progress, and the tests' stop point."""
    _indexes: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.gold_rate < 1.0:
            raise ValueError(f"gold_rate (--gold-rate) must be in [0, 1), got {self.gold_rate}")
        if self.overlap < 1 or self.batch_size < 1:
            raise ValueError(f"overlap and batch_size (--overlap, --batch-size) must be >= 1, "
                             f"got {self.overlap} and {self.batch_size}")  # fmt: skip

    def project(self, family: str) -> tuple[int, str]:
        """The family's project, created once: found again by its title (run, family, config hash)."""
        xml = label_config(family, self.taxonomies.get(family))
        title = project_title(self.run_name, family, xml)
        found = find_project(self.client, title)
        if found is not None:
            return found, title

        def create() -> int:
            again = find_project_once(self.client, title)  # a lost answer to the last try made it already
            if again is not None:
                return again
            made = self.client.projects.create(title=title, label_config=xml, maximum_annotations=self.overlap,
                                               request_options=ONCE)  # fmt: skip
            return int(made.id)

        return with_retries(create, "create project"), title

    def serve_media(self, project: int) -> None:
        """Label Studio serves a local file only below a local storage of the project: attach the
        media folder once (never synced: push imports the tasks itself)."""
        if not self.local_storage or self.remote:
            return
        path = str(Path(self.media).resolve())

        def attach() -> None:  # listed again before a retry: a lost answer to a create made it already
            have = self.client.import_storage.local.list(project=project, request_options=ONCE)
            if not any(st.path == path for st in have):
                self.client.import_storage.local.create(project=project, path=path, title="mmcurate clips",
                                                        use_blob_urls=True, synchronizable=False,
                                                        request_options=ONCE)  # fmt: skip

        with_retries(attach, "attach the media folder")

    def present(self, project: int) -> set[str]:
        """Task keys (the clip id; `gold-K:CLIP` for a gold copy) the project has tasks for: one
        listing, no retries of its own (callers retry around it)."""
        tasks = self.client.tasks.list(project=project, fields="task_only", request_options=ONCE)
        return {task_key(t.data or {}) for t in tasks}

    def gold_rows(self, family: str, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The queue rows of the gold clips with an answer for one of this family's controls; a gold
        clip that is not in the run is a ValueError naming it (its clip file is in no shard)."""
        if not self.gold or self.gold_rate == 0:
            return []
        by_id = {str(r["clip_id"]): r for r in rows}
        missing = sorted(c for c in self.gold if c not in by_id)
        if missing:
            raise ValueError(f"--gold: clips {', '.join(missing[:5])} are not in the run's annotation queue")
        names = control_names(label_config(family, self.taxonomies.get(family)))
        return [by_id[c] for c in sorted(self.gold) if names & set(self.gold[c])]

    @property
    def remote(self) -> bool:
        return isinstance(self.media, str) and "://" in self.media and not self.media.startswith("file://")

    def _media(self, row: Mapping[str, Any]) -> tuple[str, bool]:
        """The clip written where Label Studio reads it (unless there already), and its task URL."""
        name = f"{row['clip_id']}.mp4"
        if row["shard"] not in self._indexes:
            self._indexes[row["shard"]] = shard_index(self.run_root, row["shard"])
        data = clip_bytes(self.run_root, row, self._indexes[row["shard"]])
        if self.remote:
            return self._remote_media(name, data)
        path = Path(self.media) / name
        if path.exists() and path.read_bytes() == data:
            return f"{self.media_url}/{name}", False
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
        return f"{self.media_url}/{name}", True

    def _remote_media(self, name: str, data: bytes) -> tuple[str, bool]:
        fs, root = fsspec.core.url_to_fs(str(self.media))
        path = f"{root.rstrip('/')}/{name}"
        wrote = not (fs.exists(path) and fs.size(path) == len(data))  # a clip id names its frames' encode
        if wrote:
            fs.pipe_file(path, data)  # one PUT: an object appears whole or not at all
        if self.presign > 0:
            return str(fs.sign(path, expiration=int(self.presign))), wrote
        return fs.unstrip_protocol(path), wrote

    def resign(self, project: int, keys: Iterable[str]) -> int:
        """A fresh presigned URL in each listed task already in the project: a presigned URL expires,
        and a push again is how an operator renews them (tasks it did not make are left alone)."""
        fs, root = fsspec.core.url_to_fs(str(self.media))
        want = set(keys)
        tasks = with_retries(lambda: list(self.client.tasks.list(project=project, fields="task_only",
                                                                 request_options=ONCE)), "list tasks")  # fmt: skip
        renewed = 0
        for t in tasks:
            data = dict(t.data or {})
            if task_key(data) not in want or not data.get("clip_id"):
                continue
            data["video"] = str(fs.sign(f"{root.rstrip('/')}/{data['clip_id']}.mp4", expiration=int(self.presign)))
            with_retries(lambda t=t, data=data: self.client.tasks.update(id=str(t.id), data=data, request_options=ONCE),
                         f"renew task {t.id}")  # fmt: skip
            renewed += 1
        return renewed

    def task(self, row: Mapping[str, Any], family: str, url: str, key: str = "", gold: bool = False) -> dict[str, Any]:
        data = {"video": url, "clip_id": row["clip_id"], "video_id": row["video_id"], "fps": row["fps"],
                "frames": int(row["end_frame"]) - int(row["start_frame"]), "width": row["width"],
                "height": row["height"], "caption": row.get("caption", ""),
                "task_key": key or row["clip_id"], "gold": gold}  # fmt: skip
        if family in ("cinematic", COMBINED):
            data["flow"] = flow_stats(row.get("scores") or {})
        return {"data": data, "predictions": predictions(row, family, self.static_speed)}

    def push(self, family: str, rows: Sequence[Mapping[str, Any]]) -> PushSummary:
        pid, title = self.project(family)
        if not self.remote:
            Path(self.media).mkdir(parents=True, exist_ok=True)
        self.serve_media(pid)
        queue = mixed(ordered(rows, self.thresholds), self.gold_rows(family, rows), self.gold_rate)
        summary = PushSummary(family, pid, title, queued=len(rows), gold_tasks=sum(g for _, _, g in queue))
        have = with_retries(lambda: self.present(pid), "list tasks")
        summary.already = sum(key in have for key, _, _ in queue)
        if self.remote and self.presign > 0 and summary.already:
            summary.renewed = self.resign(pid, [key for key, _, _ in queue if key in have])
        todo = [entry for entry in queue if entry[0] not in have]
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            tasks = []
            for key, row, gold in batch:
                try:
                    url, wrote = self._media(row)
                except (OSError, tarfile.TarError) as exc:  # a shard gone or cut short: this clip, not the push
                    summary.missing_media.append(f"{key}: {exc}")
                    continue
                summary.media_written += wrote
                tasks.append(self.task(row, family, url, key, gold))

            tries = [0]

            def send(tasks: list[dict[str, Any]] = tasks, tries: list[int] = tries) -> Any:
                left = tasks
                if tries[0]:  # a retry: the server may have taken the batch and lost its answer
                    fresh = self.present(pid)
                    left = [t for t in tasks if task_key(t["data"]) not in fresh]
                tries[0] += 1
                if left:
                    self.client.projects.import_tasks(id=pid, request=left, return_task_ids=True, request_options=ONCE)
                return len(left)

            with_retries(send, f"import batch into project {pid}")
            have |= {key for key, _, _ in batch}
            summary.batches += 1
            if self.after_batch is not None:
                self.after_batch(family, summary.batches)
        summary.twins_removed, keys = self.remove_twins(pid)
        # counted from the project, not from the answers: a batch whose answer was lost is in too
        summary.imported = sum(key in keys for key, _, _ in todo)
        return summary

    def remove_twins(self, project: int) -> tuple[int, set[str]]:
        """Delete second tasks of one key that no one answered (an import whose answer timed out
        while the server was still writing it can be sent again before it shows in a listing);
        returns how many, and the project's task keys."""
        tasks = with_retries(
            lambda: list(self.client.tasks.list(project=project, fields="task_only", request_options=ONCE)),
            "list tasks",
        )
        by_key: dict[str, list[Any]] = {}
        for t in sorted(tasks, key=lambda t: int(t.id)):
            key = task_key(t.data or {})
            if key:  # a task without one is not push's to judge
                by_key.setdefault(key, []).append(t)
        removed = 0
        for twins in by_key.values():
            for t in twins[1:]:
                if not (t.total_annotations or t.cancelled_annotations):
                    with_retries(lambda t=t: self.client.tasks.delete(id=str(t.id), request_options=ONCE),
                                 f"delete twin task {t.id}")  # fmt: skip
                    removed += 1
        return removed, set(by_key)

    def requeue(self, family: str, clip_ids: Iterable[str], overlap: int) -> int:
        """Put the clips' tasks back in the queue for more annotators: overlap raised to `overlap`
        and marked not labelled, so Label Studio hands them out again (gold copies untouched).
        Returns how many tasks changed; a rerun changes none."""
        title = project_title(self.run_name, family, label_config(family, self.taxonomies.get(family)))
        pid = find_project(self.client, title)
        if pid is None:
            raise ValueError(f"requeue: no Label Studio project {title!r} (push the run first)")
        want = {str(c) for c in clip_ids}
        tasks = with_retries(
            lambda: list(self.client.tasks.list(project=pid, fields="all", request_options=ONCE)), "list tasks"
        )
        changed = 0
        for t in tasks:
            data = t.data or {}
            if str(data.get("clip_id")) in want and not data.get("gold") and int(t.overlap or 1) < overlap:
                with_retries(lambda t=t: self.client.tasks.update(id=str(t.id), overlap=overlap, is_labeled=False,
                                                                   request_options=ONCE),
                             f"requeue task {t.id}")  # fmt: skip
                changed += 1
        return changed


def task_key(data: Mapping[str, Any]) -> str:
    """A task's stable external id: its clip id, or `gold-K:CLIP` for the K-th gold copy of CLIP
    ("" for a task push never made: one added by hand in the UI)."""
    return str(data.get("task_key") or data.get("clip_id") or "")


def mixed(
    queue: Sequence[Mapping[str, Any]], gold: Sequence[Mapping[str, Any]], rate: float
) -> list[tuple[str, Mapping[str, Any], bool]]:
    """(task key, row, is gold) in import order: the queue with a gold copy after every
    (1 - rate) / rate regular tasks (cycling through the gold clips), so `rate` of the tasks an
    annotator meets are gold. Deterministic, so a rerun finds the same keys."""
    out = [(str(r["clip_id"]), r, False) for r in queue]
    if not gold or rate <= 0:
        return out
    mixed_in: list[tuple[str, Mapping[str, Any], bool]] = []
    credit, n = 0.0, 0
    for entry in out:
        mixed_in.append(entry)
        credit += rate / (1 - rate)
        while credit >= 1 - 1e-9:
            g = gold[n % len(gold)]
            copy = n // len(gold)  # the copy's number among this clip's: a gold clip added later shifts no key
            mixed_in.append((f"gold-{copy}:{g['clip_id']}", g, True))
            n, credit = n + 1, credit - 1
    return mixed_in


def push(pusher: Pusher, families: Iterable[str] = FAMILIES) -> list[PushSummary]:
    rows = queue_rows(pusher.run_root)
    return [pusher.push(f, rows) for f in families]


@dataclass
class Pulled:
    annotations: list[ClipAnnotation]
    unknown_clips: list[str]
    """Clip ids of tasks that are not in the run's queue (reported, never joined)."""
    cancelled: int = 0
    tasks: int = 0


def pull(client: Any, project: int, family: str, rows: Sequence[Mapping[str, Any]]) -> Pulled:
    """Every submitted annotation of a family's project, as records joined by clip id."""
    by_id = {str(r["clip_id"]): r for r in rows}
    tasks = with_retries(
        lambda: list(client.tasks.list(project=project, fields="all", request_options=ONCE)), "export tasks"
    )
    users = {u.id: u.email for u in with_retries(lambda: list(client.users.list(request_options=ONCE)), "list users")}
    out = Pulled([], [], tasks=len(tasks))
    for t in tasks:
        data = t.data or {}
        cid = str(data.get("clip_id"))
        anns = [a if isinstance(a, dict) else a.dict() for a in (t.annotations or [])]
        if cid not in by_id:
            if anns:
                out.unknown_clips.append(cid)
            continue
        row = by_id[cid]
        clip = ClipFrame(int(row["end_frame"]) - int(row["start_frame"]), float(row["fps"] or 1.0),
                         int(row["width"]), int(row["height"]))  # fmt: skip
        for a in anns:
            a["completed_by"] = users.get(a.get("completed_by"), a.get("completed_by"))  # annotators by e-mail
            if a.get("was_cancelled"):
                out.cancelled += 1
                continue
            rec = annotation_record(cid, family, a, clip, task_id=int(t.id))
            rec.gold = bool(data.get("gold"))
            out.annotations.append(rec)
    return out
