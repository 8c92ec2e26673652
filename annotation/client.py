"""Push a video run's annotation queue to Label Studio and pull the answers back, through
`label-studio-sdk` only.

Push, per label family (one project each, titled `mmcurate <run> <family> <config hash>`, so a rerun
finds its project and a changed config is a new one):
- the clip files are copied out of the run's shards into the served media folder (skipped when
  there already, with the same bytes);
- tasks are imported in batches, each task's data holding its `clip_id` (the stable external id)
  and its predictions (the models' guesses); before every batch, and before a retry, the project's
  clip ids are listed again, so a push interrupted half-way, or a batch whose response was lost,
  adds nothing twice and loses nothing;
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
from .label_configs import config_hash, label_config
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


def predictions(row: Mapping[str, Any], family: str) -> list[dict[str, Any]]:
    """The models' guesses for one family as Label Studio predictions (one prediction, or none)."""
    pre = row.get("pre_annotations") or {}
    result: list[dict[str, Any]] = []
    if family == "cinematic" and pre.get("camera_motion"):
        result.append({"from_name": "camera_motion", "to_name": "video", "type": "choices",
                       "value": {"choices": [pre["camera_motion"]]}})  # fmt: skip
    if family == "text" and row.get("width") and row.get("height"):
        frames = max(1, int(row["end_frame"]) - int(row["start_frame"]))
        for i, line in enumerate(pre.get("text") or []):
            xs, ys = [p[0] for p in line["box"]], [p[1] for p in line["box"]]
            w, h = float(row["width"]), float(row["height"])
            box = {
                "x": 100 * min(xs) / w,
                "y": 100 * min(ys) / h,
                "width": 100 * (max(xs) - min(xs)) / w,
                "height": 100 * (max(ys) - min(ys)) / h,
                "rotation": 0,
                "enabled": True,
                "frame": 1,
                "time": 0.0,
            }
            rid = f"ocr{i}"
            result.append(
                {
                    "id": rid,
                    "from_name": "text_box",
                    "to_name": "video",
                    "type": "videorectangle",
                    "value": {"framesCount": frames, "duration": frames / float(row["fps"] or 1), "sequence": [box]},
                }
            )
            result.append({"id": rid, "from_name": "transcription", "to_name": "video", "type": "textarea",
                           "value": {"text": [line["text"]]}})  # fmt: skip
    if not result:
        return []
    scores = [float(line.get("confidence", 0)) for line in pre.get("text") or []] if family == "text" else []
    return [{"model_version": f"mmcurate-{family}", "score": max(scores, default=0.0), "result": result}]


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
    """The id of the (first) project with exactly this title, or None."""
    found = [p.id for p in with_retries(lambda: list(client.projects.list(title=title)), "list projects")
             if p.title == title]  # fmt: skip
    return min(found) if found else None


RETRIABLE = (ConnectionError, TimeoutError, OSError)


def with_retries(call: Callable[[], Any], what: str, tries: int = 8, base: float = 0.5) -> Any:
    """Run `call`, retrying connection errors and 5xx answers with exponential backoff."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    for attempt in range(tries):
        try:
            return call()
        except (httpx.TransportError, *RETRIABLE) as exc:
            err: Exception = exc
        except ApiError as exc:
            if exc.status_code is None or exc.status_code < 500:
                raise
            err = exc
        if attempt == tries - 1:
            raise err
        delay = base * 2**attempt
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


@dataclass
class Pusher:
    """Push settings: where clips are served from and how tasks are batched."""

    client: Any
    run_root: str
    media: Path
    """The served media folder (below Label Studio's document root)."""
    media_url: str
    """The URL prefix Label Studio serves `media` at, e.g. `/data/local-files/?d=media`."""
    run_name: str
    batch_size: int = 50
    overlap: int = 1
    thresholds: Mapping[str, float] = field(default_factory=dict)
    taxonomies: Mapping[str, Mapping[str, Sequence[str]]] = field(default_factory=dict)
    local_storage: bool = True
    """Attach `media` as the project's local storage (a local server); False when the media URL is
    served otherwise (cloud storage of an existing deployment)."""
    after_batch: Callable[[str, int], None] | None = None
    """Called after each imported batch (family, batch number): progress, and the tests' stop point."""
    _indexes: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict, repr=False)

    def project(self, family: str) -> tuple[int, str]:
        """The family's project, created once: found again by its title (run, family, config hash)."""
        xml = label_config(family, self.taxonomies.get(family))
        title = project_title(self.run_name, family, xml)
        found = find_project(self.client, title)
        if found is not None:
            return found, title
        made = with_retries(
            lambda: self.client.projects.create(title=title, label_config=xml, maximum_annotations=self.overlap),
            "create project",
        )
        return made.id, title

    def serve_media(self, project: int) -> None:
        """Label Studio serves a local file only below a local storage of the project: attach the
        media folder once (never synced: push imports the tasks itself)."""
        if not self.local_storage:
            return
        path = str(self.media.resolve())
        have = with_retries(lambda: list(self.client.import_storage.local.list(project=project)), "list storages")
        if not any(st.path == path for st in have):
            with_retries(lambda: self.client.import_storage.local.create(
                project=project, path=path, title="mmcurate clips", use_blob_urls=True, synchronizable=False,
            ), "attach the media folder")  # fmt: skip

    def present(self, project: int) -> set[str]:
        """Clip ids the project has tasks for."""
        tasks = with_retries(lambda: list(self.client.tasks.list(project=project, fields="all")), "list tasks")
        return {str((t.data or {}).get("clip_id")) for t in tasks}

    def _media(self, row: Mapping[str, Any]) -> tuple[str, bool]:
        name = f"{row['clip_id']}.mp4"
        path = self.media / name
        if row["shard"] not in self._indexes:
            self._indexes[row["shard"]] = shard_index(self.run_root, row["shard"])
        data = clip_bytes(self.run_root, row, self._indexes[row["shard"]])
        if path.exists() and path.read_bytes() == data:
            return f"{self.media_url}/{name}", False
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
        return f"{self.media_url}/{name}", True

    def task(self, row: Mapping[str, Any], family: str, url: str) -> dict[str, Any]:
        data = {"video": url, "clip_id": row["clip_id"], "video_id": row["video_id"], "fps": row["fps"],
                "frames": int(row["end_frame"]) - int(row["start_frame"]), "width": row["width"],
                "height": row["height"], "caption": row.get("caption", "")}  # fmt: skip
        return {"data": data, "predictions": predictions(row, family)}

    def push(self, family: str, rows: Sequence[Mapping[str, Any]]) -> PushSummary:
        pid, title = self.project(family)
        self.media.mkdir(parents=True, exist_ok=True)
        self.serve_media(pid)
        summary = PushSummary(family, pid, title, queued=len(rows))
        queue = ordered(rows, self.thresholds)
        have = self.present(pid)
        summary.already = sum(str(r["clip_id"]) in have for r in queue)
        todo = [r for r in queue if str(r["clip_id"]) not in have]
        for start in range(0, len(todo), self.batch_size):
            batch = [r for r in todo[start : start + self.batch_size] if str(r["clip_id"]) not in have]
            tasks = []
            for row in batch:
                url, wrote = self._media(row)
                summary.media_written += wrote
                tasks.append(self.task(row, family, url))

            def send(tasks: list[dict[str, Any]] = tasks) -> Any:
                fresh = self.present(pid)  # a retry after a lost answer must not import twice
                left = [t for t in tasks if str(t["data"]["clip_id"]) not in fresh]
                if left:
                    self.client.projects.import_tasks(id=pid, request=left, return_task_ids=True)
                return len(left)

            summary.imported += with_retries(send, f"import batch into project {pid}")
            have |= {str(r["clip_id"]) for r in batch}
            summary.batches += 1
            if self.after_batch is not None:
                self.after_batch(family, summary.batches)
        return summary


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
    tasks = with_retries(lambda: list(client.tasks.list(project=project, fields="all")), "export tasks")
    users = {u.id: u.email for u in with_retries(lambda: list(client.users.list()), "list users")}
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
            out.annotations.append(annotation_record(cid, family, a, clip, task_id=int(t.id)))
    return out
