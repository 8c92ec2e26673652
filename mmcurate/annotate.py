"""`mmcurate annotate push|pull`: a video run's clips to Label Studio and the labels back, as an
overlay on the run (an append-only table joined by clip id; the ledgers are never rewritten).

This sits on top of `annotation/` (Label Studio, conversion, agreement) and `pipelines/overlays.py`
(the run's overlay files), the way the CLI sits on top of the pipelines. The server is given by
`LABEL_STUDIO_URL` and `LABEL_STUDIO_API_KEY` (never a flag: a token on a command line shows in `ps`
and shell history) and the token is registered with the redactor, so no log line, summary or error
message carries it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa

from mmcurate.annotation.calibration import calibration
from mmcurate.annotation.client import Pusher, find_project, project_title, pull, queue_rows
from mmcurate.annotation.client import push as push_all
from mmcurate.annotation.consensus import consensus
from mmcurate.annotation.convert import split_families
from mmcurate.annotation.label_configs import COMBINED, label_config
from mmcurate.schemas.annotation import FAMILIES
from mmcurate.schemas.redact import register_secret

OVERLAY = "human"
"""The overlay name pull writes: select reads `overlays.human.COLUMN`."""


class AnnotateError(ValueError):
    """Bad annotate settings (no server, an unknown family): the message names what to set."""


def connect(url: str | None = None, token: str | None = None) -> Any:
    """A `label_studio_sdk.LabelStudio` client for the server in the environment (or given)."""
    from label_studio_sdk import LabelStudio

    url = url or os.environ.get("LABEL_STUDIO_URL")
    token = token or os.environ.get("LABEL_STUDIO_API_KEY")
    if not url or not token:
        raise AnnotateError("set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (`make annotate-server` prints both)")
    register_secret(token)
    return LabelStudio(base_url=url, api_key=token)


def families(names: Sequence[str] | None) -> list[str]:
    """The projects to push or pull: label families (one project each, the default), or `combined`
    (one project with every family's controls; its answers still measured per family)."""
    chosen = list(names or FAMILIES)
    bad = [f for f in chosen if f not in (*FAMILIES, COMBINED)]
    if bad:
        raise AnnotateError(f"--family {', '.join(bad)}: known families are {', '.join(FAMILIES)} (or {COMBINED})")
    if COMBINED in chosen and len(chosen) > 1:
        raise AnnotateError(f"--family {COMBINED} is every family in one project: name it alone")
    return chosen


def pusher(client: Any, run_root: str, media: Path | str, media_url: str, **settings: Any) -> Pusher:
    """The run's Pusher; the queue order comes from the thresholds the run decided with, unless given."""
    settings.setdefault("thresholds", run_thresholds(run_root))
    motion = run_config(run_root).get("motion") or {}
    if isinstance(motion, dict) and isinstance(motion.get("static_speed"), int | float):
        settings.setdefault("static_speed", float(motion["static_speed"]))
    try:
        return Pusher(client, run_root, media, media_url.rstrip("/"), run_name(run_root), **settings)
    except ValueError as exc:
        raise AnnotateError(str(exc)) from None


def push(client: Any, run_root: str, media: Path | str, media_url: str, names: Sequence[str] | None = None,
         **settings: Any) -> list[dict[str, Any]]:  # fmt: skip
    """Push every family's tasks; returns one summary per family."""
    p = pusher(client, run_root, media, media_url, **settings)
    try:
        return [asdict(s) for s in push_all(p, families(names))]
    except ValueError as exc:  # a gold clip not in the run, ...
        raise AnnotateError(str(exc)) from None


def requeue(client: Any, run_root: str, media: Path | str, media_url: str, summary: Path, overlap: int,
            names: Sequence[str] | None = None, **settings: Any) -> list[dict[str, Any]]:  # fmt: skip
    """`push --requeue SUMMARY`: the clips a pull found below the agreement bound back in their
    family's queue with `overlap` annotators. Returns, per family, how many tasks changed."""
    try:
        fams = json.loads(summary.read_text())["families"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AnnotateError(f"--requeue {summary}: not a pull summary ({exc})") from None
    p = pusher(client, run_root, media, media_url, **settings)
    wanted = {family: sorted(fam.get("requeue") or []) for family, fam in sorted(fams.items())}
    if len({fam.get("project") for fam in fams.values()}) == 1 and len(fams) > 1 and not names:
        names = [COMBINED]  # a combined pull: every family of the summary names one project
    chosen = families(names)
    if chosen == [COMBINED]:  # one project holds every family: a clip low in any goes back
        wanted = {COMBINED: sorted({c for clips in wanted.values() for c in clips})}
    elif names:
        wanted = {f: clips for f, clips in wanted.items() if f in chosen}
    out = []
    for family, clips in wanted.items():
        try:
            changed = p.requeue(families([family])[0], clips, overlap)
        except ValueError as exc:
            raise AnnotateError(str(exc)) from None
        out.append({"family": family, "requeue": len(clips), "requeued": changed, "overlap": overlap})
    return out


def read_gold(path: str) -> dict[str, dict[str, str]]:
    """`--gold FILE`: {clip_id: {control: answer}}; anything else is an AnnotateError naming the file."""
    try:
        gold = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise AnnotateError(f"--gold {path}: {exc}") from None
    ok = isinstance(gold, dict) and all(
        isinstance(a, dict) and all(isinstance(v, str) for v in a.values()) for a in gold.values()
    )
    if not ok:
        raise AnnotateError(f"--gold {path}: expected {{clip_id: {{control: answer}}}}")
    return {str(c): dict(a) for c, a in gold.items()}


def run_manifest(run_root: str) -> dict[str, Any]:
    """A run's manifest; {} without one."""
    import fsspec

    try:
        with fsspec.open(f"{run_root.rstrip('/')}/manifest.json", "rb") as f:
            return json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return {}


def run_config(run_root: str) -> dict[str, Any]:
    """The config a run decided with (its manifest's); {} without a manifest."""
    return run_manifest(run_root).get("config", {}) or {}


def run_thresholds(run_root: str) -> dict[str, float]:
    """The minimum of each `min` filter the run decided with."""
    filters = run_config(run_root).get("filters", {}) or {}
    return {name: float(p["min"]) for name, p in filters.items() if isinstance(p, dict) and "min" in p}


def run_name(run_root: str) -> str:
    """A run's name in project titles: its folder's name and 8 hex digits of a hash of its inputs
    and config (the manifest's `units_sha256` and `config_sha256`), so two runs both called `out`
    never share a project, while a copy of one run (the same inputs, the same config) finds its
    projects. A title is no place for a full URI."""
    import hashlib

    name = Path(run_root.rstrip("/")).name or "run"
    identity = run_manifest(run_root).get("identity") or {}
    parts = [str(identity.get(k, "")) for k in ("units_sha256", "config_sha256")]
    if not any(parts):
        return name
    return f"{name}-{hashlib.blake2b('/'.join(parts).encode(), digest_size=4).hexdigest()}"


def pull_overlay(
    client: Any,
    run_root: str,
    projects: Mapping[str, int],
    gold: Mapping[str, Mapping[str, str]] | None = None,
    bound: float = 0.5,
    thresholds: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Pull each family's project (family -> project id), write the consensus as overlay `human` on
    the run (one row per clip any annotator labelled), and return the pull summary."""
    from mmcurate.pipelines.overlays import read_overlay, write_overlay

    rows = queue_rows(run_root)
    fps = {str(r["clip_id"]): float(r["fps"] or 1.0) for r in rows}
    merged: dict[str, dict[str, Any]] = {}
    summary: dict[str, Any] = {"families": {}, "unknown_clips": [], "cancelled": 0}
    for name, project in projects.items():
        got = pull(client, project, name, rows)
        parts = {name: got.annotations}
        if name == COMBINED:  # one answer per clip holds every family's labels: agreement per family
            split = [r for a in got.annotations for r in split_families(a)]
            parts = {f: [r for r in split if r.family == f] for f in FAMILIES}
        for family, anns in parts.items():
            by_clip, fam = consensus(anns, family, fps, gold, bound)
            for cid, cols in by_clip.items():
                merged.setdefault(cid, {}).update(cols)
            summary["families"][family] = {**asdict(fam), "project": project, "tasks": got.tasks}
        summary["unknown_clips"] += got.unknown_clips
        summary["cancelled"] += got.cancelled
    summary["clips_labelled"] = len(merged)
    summary["calibration"] = calibration(rows, merged, thresholds or run_thresholds(run_root))
    summary["labels"] = merged
    if merged:
        # the latest row of an id wins whole: carry over what earlier pulls (other families) said
        before = read_overlay(run_root, OVERLAY, "clip")
        full = {cid: {**before.get(cid, {}), **cols} for cid, cols in merged.items()}
        columns = sorted({k for cols in full.values() for k in cols})
        table = pa.table({"id": list(full), **{c: [full[i].get(c) for i in full] for c in columns}})
        summary["overlay"] = write_overlay(run_root, OVERLAY, "clip", table).path
    summary["pull_summary"] = keep_summary(run_root, summary)
    return summary


def keep_summary(run_root: str, summary: Mapping[str, Any]) -> str:
    """The pull's summary (agreement, gold, calibration; not the labels, the overlay has them) kept in
    the run beside its overlay, `overlays/human/pulls/NNNNNN.json`, one per pull: the report reads
    the latest."""
    import hashlib

    import fsspec

    from mmcurate.stages.writers import atomic_write, join

    fs, path = fsspec.core.url_to_fs(join(run_root, "overlays", OVERLAY, "pulls"))
    seq = len(fs.glob(f"{path}/*.json")) if fs.exists(path) else 0
    kept = {k: v for k, v in summary.items() if k != "labels"}
    data = (json.dumps(kept, indent=1, sort_keys=True, default=str) + "\n").encode("utf-8")
    # named like the overlay's files: a sequence number (the report reads the last) and a content hash
    uri = join(run_root, "overlays", OVERLAY, "pulls", f"{seq:06d}-{hashlib.sha256(data).hexdigest()[:12]}.json")
    atomic_write(uri, data)
    return uri


def write_clips(run_root: str, labels: Mapping[str, Mapping[str, Any]], out_dir: Path) -> dict[str, str]:
    """Each usable labelled clip's mp4, from the run's shards to `OUT/videos/CLIP.mp4`; clip id ->
    that path relative to `OUT` (so the folder can move)."""
    from mmcurate.annotation.client import clip_bytes, shard_index

    rows = {str(r["clip_id"]): r for r in queue_rows(run_root)}
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    indexes: dict[str, dict[str, tuple[int, int]]] = {}
    for cid in labels:
        if cid in rows and labels[cid].get("usable") != "unusable":
            shard = rows[cid]["shard"]
            if shard not in indexes:
                indexes[shard] = shard_index(run_root, shard)
            rel = f"videos/{cid}.mp4"
            (out_dir / rel).write_bytes(clip_bytes(run_root, rows[cid], indexes[shard]))
            paths[cid] = rel
    return paths


def write_sft(
    run_root: str, labels: Mapping[str, Mapping[str, Any]], out_dir: Path, name: str = "mmcurate_human"
) -> int:
    """LLaMA-Factory SFT rows from the consensus labels (annotation/derived.py): `OUT/NAME.json`, the
    clips in `OUT/videos/` and the `dataset_info.json` entry (merged into one that is there).
    Returns the number of rows."""
    from mmcurate.annotation.derived import sft_rows
    from mmcurate.stages.trainer_formats import dataset_info

    sft = sft_rows(labels, write_clips(run_root, labels, out_dir))
    (out_dir / f"{name}.json").write_text(json.dumps(sft, ensure_ascii=False, indent=1) + "\n")
    info_path = out_dir / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info.update(dataset_info(name, f"{name}.json"))
    info_path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return len(sft)


def write_questions(
    run_root: str,
    labels: Mapping[str, Mapping[str, Any]],
    out_dir: Path,
    taxonomies: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
) -> int:
    """Video questions for the pass-rate corpus from the consensus labels: `OUT/questions.jsonl`
    (what `mmcurate sft|rl --input` reads, videos relative to it) and the clips in `OUT/videos/`.
    Returns the number of questions."""
    from mmcurate.annotation.derived import video_questions
    from mmcurate.annotation.label_configs import options

    taxonomies = taxonomies or {}
    opts = {}
    for family, controls in (("cinematic", ("camera_motion", "shot_size", "camera_angle")), ("actions", ("action",))):
        xml = label_config(family, taxonomies.get(family))
        opts.update({c: options(xml, c) for c in controls})
    rows = video_questions(labels, write_clips(run_root, labels, out_dir), opts)
    lines = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    (out_dir / "questions.jsonl").write_text(lines, encoding="utf-8")
    return len(rows)


def projects_of(client: Any, run_root: str, names: Sequence[str] | None = None,
                taxonomies: Mapping[str, Mapping[str, Sequence[str]]] | None = None) -> dict[str, int]:  # fmt: skip
    """family -> project id of the projects push made for this run (found by title); a family never
    pushed is an AnnotateError naming it."""
    out = {}
    for family in families(names):
        title = project_title(run_name(run_root), family, label_config(family, (taxonomies or {}).get(family)))
        pid = find_project(client, title)
        if pid is None:
            raise AnnotateError(f"no Label Studio project {title!r}: push the run first (`mmcurate annotate push`)")
        out[family] = pid
    return out


def serve(root: Path, port: int) -> int:
    """`mmcurate annotate server`: a local Label Studio in the foreground until Ctrl-C (or SIGTERM:
    `make annotate-stop`), printing what to export. Admin e-mail, password and token come from
    LABEL_STUDIO_USERNAME, LABEL_STUDIO_PASSWORD and LABEL_STUDIO_API_KEY (made up when unset)."""
    import signal
    import threading

    from mmcurate.annotation import server as ls

    email = os.environ.get("LABEL_STUDIO_USERNAME", "admin@example.com")
    password = os.environ.get("LABEL_STUDIO_PASSWORD") or None
    token = os.environ.get("LABEL_STUDIO_API_KEY") or None
    try:
        srv = ls.local_server(root, port, email, password, token)
    except ValueError as exc:
        raise AnnotateError(str(exc)) from None
    register_secret(srv.password)
    register_secret(srv.token)
    print(f"installing Label Studio {ls.VERSION} into {ls.env_dir()} (once)...", flush=True)
    ls.ensure_env(log=root / "install.log")
    srv.start()
    (root / "server.pid").write_text(str(os.getpid()))
    token_file = root / "token"
    ls.write_secret(token_file, srv.token)
    print(f"Label Studio on {srv.url} (data and media in {root}); log in as {srv.email}, password and token in "
          f"{root / ls.CREDENTIALS}; in another shell:", flush=True)  # fmt: skip
    print(f"  export LABEL_STUDIO_URL={srv.url} LABEL_STUDIO_API_KEY=$(cat {token_file})", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        while not done.wait(1.0):
            if srv.proc is not None and srv.proc.poll() is not None:
                print(f"Label Studio exited ({srv.proc.returncode}); see {root / 'server.log'}")
                return 1
    finally:
        srv.stop()
        (root / "server.pid").unlink(missing_ok=True)
    print("Label Studio stopped")
    return 0
