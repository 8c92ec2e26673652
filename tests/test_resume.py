"""Kill a run with SIGKILL at a deterministic point, resume it, get what an uninterrupted run gives.

Each run is the real CLI in a process group of its own; `MMCURATE_FAILPOINT=PHASE:N` makes the run
kill its whole group (driver and workers) with SIGKILL once N units have that phase's marker on
storage: `spooled` while units are still being read and scored, `committed` while units are being
committed. The resumed output must be byte-identical to the uninterrupted one (the manifest's
`created` aside), every sample once.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmcurate.demo.video import Segment, make_video

TWO_WORKERS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
RULES = """filters:
  file_size: {min_bytes: 1024}
  min_side: {min: 64}
  aspect_ratio: {max: 3.0}
  caption_length: {min_words: 2, max_words: 200}
  caption_repetition: {max_ratio: 0.5}
  language: {allowed: [en], min_prob: 0.5}
"""
COMPARED = ("shards", "index", "ledger", "dropped", "quarantined", "summaries", "annotation", "units.json")


def _jpeg(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def rules(tmp: Path) -> Path:
    """The caption defaults with rule filters only (no model weights on this machine)."""
    path = tmp / "rules.yaml"
    path.write_text(RULES)
    return path


def caption_corpus(root: Path, shards: int = 6, per_shard: int = 12) -> Path:
    """Tar shards of distinct images, except that each shard's first image repeats the second one of
    the shard before (a run-wide duplicate); the last image of each shard does not decode."""
    root.mkdir(parents=True)
    for s in range(shards):
        with tarfile.open(root / f"shard-{s:02d}.tar", "w") as tar:
            for i in range(per_shard):
                seed = s * 100 + i
                data = _jpeg((s - 1) * 100 + 1 if i == 0 and s > 0 else seed)
                if i == per_shard - 1:
                    data = b"\xff\xd8 not a jpeg"
                members = {"jpg": data, "txt": f"a smooth colourful gradient number {seed} in soft tones".encode()}
                for ext, payload in members.items():
                    info = tarfile.TarInfo(f"s{seed:05d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return root


def mmcurate(*args: str, failpoint: str | None = None, check: bool = True, timeout: float = 300) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MMCURATE_FAILPOINT"}
    if failpoint:
        env["MMCURATE_FAILPOINT"] = failpoint
    proc = subprocess.run(
        [sys.executable, "-m", "mmcurate.cli", *args, "--no-progress"],
        env=env, start_new_session=True, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if check and failpoint is None and proc.returncode != 0:
        raise AssertionError(f"mmcurate {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.returncode


def files_of(root: Path) -> dict[str, bytes]:
    out = {}
    for part in COMPARED:
        base = root / part
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        out.update({str(p.relative_to(root)): p.read_bytes() for p in paths})
    manifest = json.loads((root / "manifest.json").read_text())
    manifest.pop("created")
    out["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    return out


def assert_same_run(reference: Path, resumed: Path) -> None:
    want, got = files_of(reference), files_of(resumed)
    assert sorted(got) == sorted(want)
    differ = [name for name in want if want[name] != got[name]]
    assert not differ, f"differ from the uninterrupted run: {differ}"
    assert not (resumed / "_work").exists() and not (resumed / "_spool").exists()


def shard_keys(root: Path) -> list[str]:
    keys = []
    for shard in sorted((root / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            keys += sorted({m.name.split(".", 1)[0] for m in tar.getmembers()})
    return keys


def markers(root: Path, phase: str) -> int:
    pattern = "_work/spooled/part-*.json" if phase == "spooled" else "summaries/part-*.json"
    return len(list(root.glob(pattern)))


def kill_and_resume(args: list[str], out: Path, phase: str, n: int, units: int) -> dict:
    """Run until the failpoint kills it, check where it stopped, resume; the resumed run's metrics."""
    rc = mmcurate(*args, "--output", str(out), failpoint=f"{phase}:{n}")
    assert rc == -signal.SIGKILL, f"the run was not killed at {phase}:{n} (exit {rc})"
    assert not (out / "manifest.json").exists()
    assert (out / "_work" / "run.json").exists()
    spooled, committed = markers(out, "spooled"), markers(out, "committed")
    if phase == "spooled":
        assert n <= spooled < units and committed == 0, (spooled, committed)
    else:
        assert spooled == units and n <= committed < units, (spooled, committed)
    assert mmcurate(*args, "--output", str(out), check=False) == 2, "a rerun without --resume must refuse"
    mmcurate(*args, "--output", str(out), "--resume")
    metrics = json.loads((out / "metrics.json").read_text())["counters"]
    # Only the unfinished work ran again: units read = those with no spooled marker.
    assert metrics.get("mmcurate/units.read", 0) == units - spooled
    assert metrics.get("mmcurate/units.written", 0) == units - committed
    return metrics


@pytest.fixture(scope="module")
def caption_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    """The caption corpus, its arguments (two worker processes), and its uninterrupted run."""
    tmp = tmp_path_factory.mktemp("caption")
    args = ["caption", "--input", str(caption_corpus(tmp / "in")), "--config", str(rules(tmp)), *TWO_WORKERS]
    mmcurate(*args, "--output", str(tmp / "reference"))
    return args, tmp / "reference"


@pytest.mark.parametrize("phase", ["spooled", "committed"])
def test_caption_two_workers_killed_and_resumed_matches_uninterrupted(
    caption_run: tuple[list[str], Path], phase: str
) -> None:
    args, reference = caption_run
    manifest = json.loads((reference / "manifest.json").read_text())
    caption = manifest["kinds"]["caption"]
    assert manifest["accounting_ok"] and caption["counts"]["input"] == 6 * 12
    assert caption["reasons"]["dropped"].get("duplicate_exact") == 5  # across units: run-wide dedup ran

    out = reference.parent / f"out-{phase}"
    kill_and_resume(args, out, phase, 2, units=6)
    assert_same_run(reference, out)
    keys = shard_keys(out)
    assert len(keys) == len(set(keys)) == caption["counts"]["kept"]  # every kept sample once


def video_corpus(root: Path) -> Path:
    root.mkdir(parents=True)
    make_video(root / "a.mp4", [Segment("testsrc2", 75), Segment("smptebars", 75)], size=(320, 180))
    make_video(root / "b.mp4", [Segment("pan_left", 75), Segment("zoom_in", 75, seed=1)], size=(320, 180))
    make_video(root / "c.mp4", [Segment("mandelbrot", 90)], size=(320, 180))
    shutil.copy(root / "a.mp4", root / "d-copy-of-a.mp4")  # a repeat in another unit
    (root / "e-broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(200))
    return root


@pytest.fixture(scope="module")
def video_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    if shutil.which("ffmpeg") is None:
        pytest.skip("FFmpeg is not installed (make ffmpeg)")
    tmp = tmp_path_factory.mktemp("video")
    config = tmp / "video.yaml"
    config.write_text("read:\n  folder_unit_size: 1\nfilters: {}\n")  # five units: the kill falls between them
    args = ["video", "--input", str(video_corpus(tmp / "in")), "--config", str(config)]
    mmcurate(*args, "--output", str(tmp / "reference"))
    return args, tmp / "reference"


@pytest.mark.parametrize("phase", ["spooled", "committed"])
def test_video_killed_and_resumed_matches_uninterrupted(video_run: tuple[list[str], Path], phase: str) -> None:
    args, reference = video_run
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["accounting_ok"] and manifest["kinds"]["video"]["counts"]["input"] == 5
    assert manifest["kinds"]["video"]["reasons"]["dropped"].get("duplicate_exact") == 1
    assert manifest["kinds"]["clip"]["counts"]["kept"] >= 4

    out = reference.parent / f"out-{phase}"
    kill_and_resume(args, out, phase, 2, units=5)
    assert_same_run(reference, out)
    keys = shard_keys(out)
    assert len(keys) == len(set(keys)) == manifest["kinds"]["clip"]["counts"]["kept"]


def test_overwrite_deletes_only_what_a_run_wrote(tmp_path: Path) -> None:
    corpus = caption_corpus(tmp_path / "in", shards=2, per_shard=4)
    out = tmp_path / "out"
    mine = {"notes.txt": b"the curator's notes", "shards/README": b"do not delete", "ledger/x.csv": b"1,2",
            "shards/part-00000-notes.txt": b"named like ours, but not ours"}  # fmt: skip
    for rel, data in mine.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    empty = [out / "mydir" / "sub", out / "overlays" / "human" / "caption"]  # folders of the user's
    for d in empty:
        d.mkdir(parents=True)
    args = ["caption", "--input", str(corpus), "--config", str(rules(tmp_path)), "--output", str(out)]
    assert mmcurate(*args, check=False) == 2  # the folder holds shards/ and ledger/: refused, nothing touched
    mmcurate(*args, "--overwrite")
    first = files_of(out)
    # a killed run leaves shards of a unit with no summary: --overwrite knows them by unit
    assert mmcurate(*args, "--overwrite", failpoint="committed:1") == -signal.SIGKILL
    proc = subprocess.run(
        [sys.executable, "-m", "mmcurate.cli", *args, "--overwrite", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "left 4 files it did not write" in proc.stderr and "part-00000-notes.txt" in proc.stderr
    for rel, data in mine.items():
        assert (out / rel).read_bytes() == data
    assert all(d.is_dir() for d in empty)
    assert files_of(out) == {**first, "manifest.json": files_of(out)["manifest.json"]}
    rows = sum(pq.read_metadata(p).num_rows for p in (out / "index").glob("*.parquet"))
    assert rows == len(shard_keys(out)) > 0


def test_resume_refuses_a_changed_config_and_finishes_a_finished_run(tmp_path: Path) -> None:
    corpus = caption_corpus(tmp_path / "in", shards=2, per_shard=4)
    out = tmp_path / "out"
    args = ["caption", "--input", str(corpus), "--config", str(rules(tmp_path)), "--output", str(out)]
    assert mmcurate(*args, failpoint="spooled:1") == -signal.SIGKILL
    other = tmp_path / "other.yaml"
    other.write_text(RULES + "dedup:\n  near: false\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mmcurate.cli", *args, "--resume", "--config", str(other), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "the config differ" in proc.stderr
    mmcurate(*args, "--resume")
    before = (out / "manifest.json").read_bytes()
    mmcurate(*args, "--resume")  # finished already: nothing runs, the manifest stands
    assert (out / "manifest.json").read_bytes() == before
    # a finished run is the same run only with the same config (the manifest keeps its identity)
    proc = subprocess.run(
        [sys.executable, "-m", "mmcurate.cli", *args, "--resume", "--config", str(other), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "the config differ" in proc.stderr
    assert (out / "manifest.json").read_bytes() == before


def test_a_killed_overwrite_leaves_nothing_resume_would_take_for_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--overwrite deletes the manifest (and the run state) first: killed part-way, the folder holds
    no finished run and no resumable one, so --resume refuses instead of reporting a finished run."""
    import fsspec.implementations.local as local

    from mmcurate.pipelines.corpus import get
    from mmcurate.pipelines.resume import clear_run

    corpus = caption_corpus(tmp_path / "in", shards=2, per_shard=4)
    out = tmp_path / "out"
    args = ["caption", "--input", str(corpus), "--config", str(rules(tmp_path)), "--output", str(out)]
    mmcurate(*args)
    deleted: list[str] = []
    real_rm = local.LocalFileSystem.rm

    def rm_then_die(self: local.LocalFileSystem, path: str, *a: object, **k: object) -> None:
        if len(deleted) == 3:  # the process dies before its fourth deletion
            raise KeyboardInterrupt
        deleted.append(path)
        real_rm(self, path, *a, **k)

    monkeypatch.setattr(local.LocalFileSystem, "rm", rm_then_die)
    with pytest.raises(KeyboardInterrupt):
        clear_run(str(out), get("caption").outputs)
    monkeypatch.undo()
    assert Path(deleted[0]).name == "manifest.json" and (out / "ledger").exists()
    assert mmcurate(*args, "--resume", check=False) == 2  # nothing to resume: refused
    mmcurate(*args, "--overwrite")
    assert json.loads((out / "manifest.json").read_text())["accounting_ok"]


def test_clear_run_knows_a_run_s_files_by_their_exact_names(tmp_path: Path) -> None:
    """A killed run's files: unit numbers past 99,999 and shard numbers past 9,999 included,
    half-written temp files of run-level files, empty spool folders; the user's files stay."""
    from mmcurate.pipelines.corpus import get
    from mmcurate.pipelines.resume import clear_run

    out = tmp_path / "out"
    ours = ["shards/part-100000-0000.tar", "shards/part-00001-10000.tar", "index/part-100000-0000.parquet",
            "ledger/caption/part-100000.parquet", "shards/part-123456-0000.tar.tmp-0123456789ab",
            "manifest.json.tmp-0123456789ab", "units.json", "_work/run.json",
            "summaries/part-00001.json.tmp-aaaaaaaaaaaa"]  # fmt: skip
    theirs = ["shards/part-100000-notes.txt", "notes.txt", "overlays/human/caption/000000-abc.parquet"]
    units = [{"index": i, "uri": "x", "files": [], "group": ""} for i in (1, 100000, 123456)]
    for rel in ours + theirs:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(json.dumps(units).encode() if rel == "units.json" else b"x")
    (out / "_spool" / "part-00009").mkdir(parents=True)  # a kill between makedirs and the first file
    left = clear_run(str(out), get("caption").outputs)
    assert left == sorted(theirs[:2])
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(theirs)
    assert not (out / "_spool").exists() and not (out / "_work").exists()


def test_a_select_run_s_identity_is_its_parent_s_content_not_how_its_path_is_spelled() -> None:
    from mmcurate.pipelines.corpus import get
    from mmcurate.pipelines.resume import run_identity

    caption = get("caption")
    config = caption.load_config(None)
    lineage = {"parent_run": "runs/a", "parent_manifest_sha256": "1" * 64, "parent_overlays": [], "step": "select"}
    same = run_identity("caption", config, [], {}, lineage)
    assert same == run_identity("caption", config, [], {}, {**lineage, "parent_run": "/abs/runs/a/"})
    changed = run_identity("caption", config, [], {}, {**lineage, "parent_overlays": ["overlays/h/caption/0.parquet"]})
    assert changed["lineage_sha256"] != same["lineage_sha256"]


def test_clear_run_knows_the_sft_images_by_their_content_names(tmp_path: Path) -> None:
    """SFT images (`images/<sha256>.<ext>`, shared by units) of a killed run go; the user's stay."""
    from mmcurate.pipelines.corpus import get
    from mmcurate.pipelines.resume import clear_run

    out = tmp_path / "out"
    sha = "ab" * 32
    ours = [f"images/{sha}.png", f"images/{sha}.jpg.tmp-0123456789ab", "sft/part-00000.parquet", "units.json"]
    theirs = ["images/cat.png", f"notes/{sha}.png", "images/README.md"]
    for rel in ours + theirs:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        unit = b'[{"index": 0, "uri": "x", "files": [], "group": ""}]'
        (out / rel).write_bytes(unit if rel == "units.json" else b"x")
    left = clear_run(str(out), get("sft").outputs)
    assert left == sorted(theirs)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(theirs)


def test_interleaved_killed_after_a_commit_and_resumed_matches_uninterrupted(tmp_path: Path) -> None:
    """Documents and their images (two kinds, run-wide URL, MinHash and image dedup) resume exactly."""
    from mmcurate.demo import interleaved as demo

    docs = demo.build_corpus(tmp_path / "in")
    config = tmp_path / "interleaved.yaml"
    config.write_text(
        json.dumps({"read": {"image_root": str(tmp_path / "in" / "images")},
                    "filters": {**demo.demo_config(str(tmp_path / "in" / "images"))[0].filters,
                                "alignment": {"source": "input"}}})
    )  # fmt: skip
    args = ["interleaved", "--input", str(docs), "--config", str(config)]
    mmcurate(*args, "--output", str(tmp_path / "reference"))
    manifest = json.loads((tmp_path / "reference" / "manifest.json").read_text())
    assert manifest["accounting_ok"] and manifest["kinds"]["document"]["reasons"]["dropped"]["duplicate_url"] == 1
    out = tmp_path / "out"
    kill_and_resume(args, out, "committed", 1, units=2)
    assert_same_run(tmp_path / "reference", out)
