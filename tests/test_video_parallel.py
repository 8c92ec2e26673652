"""The video recipe's parallelism inside one unit, and the spool bounded to the uncommitted units.

One uncompressed tar of 40 generated videos (video2dataset layout: KEY.mp4 + KEY.txt) is one unit;
'SpreadVideos' must spread its videos over both worker processes of a two-worker run (each worker
counts what it analysed in metrics.json, by pid), and the output must be byte for byte the
one-worker run's. A run killed while committing must hold no spool file of a committed unit.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from mmcurate.cli import main
from mmcurate.pipelines.finish import CommitUnitFn, Run
from mmcurate.pipelines.video import CORPUS

pytestmark = pytest.mark.slow

VIDEOS = 40
CONFIG = "filters: {clip_size: {min_side: 16}}\nclips: {min_duration: 0.5}\n"
"""No model stage; a one-second video is one clip of one scene."""
TWO_WORKERS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
PID_COUNTER = re.compile(r"mmcurate/video\.analysed_by\.pid(\d+)")


def _video(path: Path, i: int) -> Path:
    """One second (15 frames) at 160x120 of a slow pan over random colour blocks (seed `i`): every
    video is its own content, so clip dedup keeps all of them."""
    blocks = np.random.default_rng(i).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    still = np.kron(blocks, np.ones((20, 20, 1), np.uint8))
    frames = np.stack([np.roll(still, 2 * t, axis=1) for t in range(15)])
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
         "-s", "160x120", "-r", "15", "-i", "-", "-c:v", "libx264", "-preset", "ultrafast", "-threads", "1",
         "-pix_fmt", "yuv420p", str(path)],
        input=frames.tobytes(), check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    if shutil.which("ffmpeg") is None:
        pytest.skip("FFmpeg is not installed (make ffmpeg)")
    root = tmp_path_factory.mktemp("videos")
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        paths = list(pool.map(lambda i: _video(root / f"v{i:03d}.mp4", i), range(VIDEOS)))
    assert len({p.read_bytes() for p in paths}) == VIDEOS
    return paths


def _tar(videos: list[Path], path: Path) -> Path:
    with tarfile.open(path, "w") as tar:  # uncompressed: members are read as byte ranges
        for i, video in enumerate(videos):
            tar.add(video, f"{i:05d}.mp4")
            caption = f"test pattern number {i}".encode()
            info = tarfile.TarInfo(f"{i:05d}.txt")
            info.size = len(caption)
            tar.addfile(info, io.BytesIO(caption))
    return path


def killed_at(failpoint: str, *args: str) -> int:
    """The real CLI in a process group of its own, which the failpoint kills (driver and workers)."""
    env = {**{k: v for k, v in os.environ.items() if k != "MMCURATE_FAILPOINT"}, "MMCURATE_FAILPOINT": failpoint}
    proc = subprocess.run(
        [sys.executable, "-m", "mmcurate.cli", *args, "--no-progress"],
        env=env, start_new_session=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return proc.returncode


def mmcurate(*args: str) -> None:
    """The CLI in this process (its Beam workers in processes of their own with TWO_WORKERS)."""
    assert main([*args, "--no-progress"]) == 0


def _outputs(root: Path) -> dict[str, bytes]:
    """Every file of a finished run; the manifest without its timestamp, metrics.json aside."""
    out = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    del out["metrics.json"]
    manifest = json.loads(out.pop("manifest.json"))
    manifest.pop("created")
    out["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    return out


def _workers(root: Path) -> dict[int, int]:
    counters = json.loads((root / "metrics.json").read_text())["counters"]
    return {int(m.group(1)): n for name, n in counters.items() if (m := PID_COUNTER.fullmatch(name))}


def test_two_workers_share_one_tar_and_write_what_one_worker_writes(videos: list[Path], tmp_path: Path) -> None:
    tar = _tar(videos, tmp_path / "videos.tar")
    config = tmp_path / "video.yaml"
    config.write_text(CONFIG)
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["video", "--input", str(tar), "--config", str(config)]
    mmcurate(*args, "--output", str(one))
    mmcurate(*args, "--output", str(two), *TWO_WORKERS)

    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["accounting_ok"] and len(json.loads((two / "units.json").read_text())) == 1
    assert manifest["kinds"]["video"]["counts"]["input"] == VIDEOS
    assert manifest["kinds"]["clip"]["counts"]["kept"] == VIDEOS  # one clip per video, none lost
    assert sum(_workers(one).values()) == VIDEOS and len(_workers(one)) == 1
    # the one unit's videos were analysed by both worker processes, and each video by one of them
    pids = _workers(two)
    assert len(pids) == 2 and all(n > 0 for n in pids.values()) and sum(pids.values()) == VIDEOS, pids
    assert os.getpid() not in pids

    want, got = _outputs(one), _outputs(two)
    assert sorted(got) == sorted(want)
    assert [name for name in want if want[name] != got[name]] == []
    assert {"shards/part-00000-0000.tar", "ledger/clip/part-00000.parquet", "annotation/part-00000.jsonl"} <= set(want)
    # which worker did what is in metrics.json only: no other file names a counter or a pid
    for name, data in got.items():
        assert b"analysed_by" not in data, name
        assert not any(f"pid{pid}".encode() in data for pid in pids), name


def test_a_committed_unit_holds_no_spool_file(videos: list[Path], tmp_path: Path) -> None:
    """Killed after two of four units are committed: their clips and spooled media are gone, the
    others' wait; a retried commit of a released unit keeps its outputs; the resumed run finishes."""
    folder = tmp_path / "in"
    folder.mkdir()
    for video in videos[:4]:
        shutil.copy(video, folder / video.name)
    config = tmp_path / "video.yaml"
    config.write_text(CONFIG + "read: {folder_unit_size: 1}\n")  # four units of one video
    out = tmp_path / "out"
    args = ["video", "--input", str(folder), "--config", str(config), "--output", str(out)]
    assert killed_at("committed:2", *args) == -signal.SIGKILL

    committed = {int(p.stem.split("-")[1]) for p in (out / "summaries").glob("part-*.json")}
    assert len(committed) == 2, committed  # one worker: the kill follows the second summary
    for unit in range(4):
        clips = sorted((out / "_spool" / f"{unit:05d}").glob("*.mp4"))
        assert (not clips) if unit in committed else len(clips) == 1, (unit, clips)

    # A runner that retries a commit whose first try wrote the summary: the unit is not written
    # again (its clips are gone from the spool: a second write would quarantine them all).
    unit = min(committed)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and "_work" not in p.parts}
    left = out / "_spool" / f"part-{unit:05d}" / "left-by-a-kill.bin"  # the shared spool every corpus has
    left.parent.mkdir(parents=True)
    left.write_bytes(b"media a kill between the summary and the release left")
    cfg = CORPUS.load_config(str(config))
    fn = CommitUnitFn("video", Run("video", str(out), 4, CORPUS.fields(cfg)), cfg)
    fn.setup()
    assert list(fn.process((unit, {"dups": []}))) == [unit]
    assert {p: p.read_bytes() for p in before} == before
    assert not (out / "_spool" / f"{unit:05d}").exists() and not left.parent.exists()

    mmcurate(*args, "--resume")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["accounting_ok"] and manifest["kinds"]["clip"]["counts"]["kept"] == 4
    assert manifest["totals"]["samples"] == 4 and not (out / "_spool").exists()
