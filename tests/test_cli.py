"""The command line behaves like the tools our users know: strict options with suggestions, Beam's
options checked against Beam's own, `--version`, `--log-level`, `--limit` with books that still add
up, `--dry-run` that writes nothing, and make targets that never share an output folder."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmcurate.cli import main

ROOT = Path(__file__).resolve().parents[1]
RULES = "filters:\n  min_side: {min: 16}\n  caption_length: {min_words: 1}\n"
CAPTIONS = [f"a photo of a red bus number {i} on a street" for i in range(20)]


@pytest.fixture
def inputs(tmp_path: Path, photo: Callable, to_bytes: Callable) -> dict[str, Path]:
    """One corpus in three containers: a 10-line jsonl (with one bad line), a 7-row parquet, a 6-sample tar."""
    root = tmp_path / "in"
    (root / "img").mkdir(parents=True)
    images = [to_bytes(photo((64, 48), seed=i)) for i in range(20)]
    for i in range(10):
        (root / "img" / f"{i}.jpg").write_bytes(images[i])
    lines = [json.dumps({"image": f"img/{i}.jpg", "caption": CAPTIONS[i]}) for i in range(10)]
    lines[2] = "{not json"
    (root / "rows.jsonl").write_text("\n".join(lines) + "\n")
    pq.write_table(
        pa.table({"image": images[10:17], "caption": CAPTIONS[10:17]}), root / "rows.parquet"
    )  # fmt: skip
    with tarfile.open(root / "shard.tar", "w") as tf:
        for i in range(6):
            for ext, data in (("jpg", images[i]), ("txt", CAPTIONS[i].encode())):
                info = tarfile.TarInfo(f"s{i:03d}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(RULES + "read: {jsonl_unit_lines: 4}\n")
    return {"jsonl": root / "rows.jsonl", "parquet": root / "rows.parquet", "tar": root / "shard.tar", "cfg": cfg}


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr, each with its whitespace runs made one space (rich wraps lines)."""
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, " ".join(out.out.split()), " ".join(out.err.split())


def caption(inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    files = [str(inputs[k]) for k in ("jsonl", "parquet", "tar")]
    return ["caption", "--input", *files, "--output", str(out), "--config", str(inputs["cfg"]), "--no-progress", *extra]


def test_a_misspelled_own_flag_fails_with_a_suggestion(inputs, tmp_path, capsys) -> None:
    rc, _, err = cli(capsys, *caption(inputs, tmp_path / "o", "--overwirte"))
    assert rc == 2 and "unrecognized argument --overwirte" in err and "did you mean --overwrite?" in err
    rc, _, err = cli(capsys, *caption(inputs, tmp_path / "o", "--limt", "2"))
    assert rc == 2 and "did you mean --limit?" in err
    assert not (tmp_path / "o").exists()


def test_a_misspelled_beam_flag_fails_with_a_suggestion(inputs, tmp_path, capsys) -> None:
    rc, _, err = cli(capsys, *caption(inputs, tmp_path / "o", "--direct_num_wrokers=2"))
    assert rc == 2 and "did you mean --direct_num_workers?" in err
    rc, _, err = cli(capsys, *caption(inputs, tmp_path / "o", "--runner", "DirectRunner", "stray"))
    assert rc == 2 and "unexpected argument 'stray'" in err
    # A command that runs no pipeline takes no Beam option either.
    rc, _, err = cli(capsys, "reasons", "--runner=DirectRunner")
    assert rc == 2 and "not an option of this command" in err
    assert not (tmp_path / "o").exists()


def test_known_beam_flags_pass_and_the_run_uses_them(inputs, tmp_path, capsys) -> None:
    args = caption(inputs, tmp_path / "o", "--runner", "DirectRunner", "--direct_num_workers=1", "--log-level", "info")
    root = logging.getLogger()
    level = root.level
    try:
        rc, _, _ = cli(capsys, *args)
        assert root.level == logging.INFO  # --log-level, case-insensitive
    finally:
        root.setLevel(level)
    assert rc == 0 and json.loads((tmp_path / "o" / "manifest.json").read_text())["accounting_ok"]


def test_version_and_no_beam_import_noise() -> None:
    """In a fresh process, as a user runs it: Beam's 'apitools not found' never shows, even for --help."""
    exe = [sys.executable, "-m", "mmcurate"]
    version = subprocess.run([*exe, "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and re.fullmatch(r"mmcurate \S+ \(apache-beam \S+, pyarrow \S+\)\n", version.stdout)
    helped = subprocess.run([*exe, "caption", "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "--limit" in helped.stdout and "--dry-run" in helped.stdout
    assert helped.stderr == "" and version.stderr == ""


def test_dry_run_writes_nothing_and_counts_the_inputs(inputs, tmp_path, capsys) -> None:
    out = tmp_path / "o"
    rc, text, _ = cli(capsys, *caption(inputs, out, "--dry-run"))
    assert rc == 0 and not out.exists()
    assert "dry run, 5 units" in text  # jsonl lines 1-4, 5-8, 9-10; the parquet; the tar
    assert "records in the inputs: 17 (+ 1 tar units, counted only when read)" in text
    assert "holds no run" in text
    # A folder holding a run is told, and still nothing is written or removed.
    assert cli(capsys, *caption(inputs, out))[0] == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    rc, text, _ = cli(capsys, *caption(inputs, out, "--dry-run"))
    assert rc == 0 and "needs --resume or --overwrite" in text
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_limit_reads_the_first_records_and_the_books_still_add_up(inputs, tmp_path, capsys) -> None:
    out = tmp_path / "o"
    rc, text, _ = cli(capsys, *caption(inputs, out, "--limit", "3"))
    assert rc == 0
    m = json.loads((out / "manifest.json").read_text())
    counts = m["kinds"]["caption"]["counts"]
    # 3 records per input file: jsonl lines 1-3 (line 3 is bad JSON), parquet rows 0-2, tar samples 0-2.
    assert counts["input"] == 9 == counts["kept"] + counts["dropped"] + counts["quarantined"]
    assert counts["quarantined"] == 1 and m["accounting_ok"]
    assert m["limit"] == {"records_per_input": 3, "read": 9, "not_read": 7 + 4 + 3, "held": 10 + 7 + 6}
    rows = [r for f in sorted((out / "ledger" / "caption").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    members = sorted(r["source"]["member"] for r in rows)
    assert members == sorted(["line1", "line2", "line3", "row0", "row1", "row2", "s000", "s001", "s002"])
    assert "9 of the 23 records in the inputs read, 14 not read" in text
    # A resume with another limit is another run: refused.
    rc, _, err = cli(capsys, *caption(inputs, out, "--limit", "4", "--resume"))
    assert rc == 2 and "config" in err


def test_limit_must_be_positive(inputs, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(caption(inputs, tmp_path / "o", "--limit", "0"))
    assert exc.value.code == 2 and "must be at least 1" in capsys.readouterr().err


def test_make_targets_have_their_own_output_folders() -> None:
    """`make -n` prints what each target would run: no two write into the same folder, and the
    pass-rate targets refuse to start without questions instead of reading the caption demo."""

    def dry(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["make", "-n", "-W", "pyproject.toml", *args], cwd=ROOT, capture_output=True, text=True)

    outputs = {}
    for target, extra in (("caption", ()), ("video", ("INPUT=v",)), ("sft", ("INPUT=q.jsonl",)), ("rl", ("INPUT=q",))):
        run = dry(target, *extra)
        (line,) = [ln for ln in run.stdout.splitlines() if f"mmcurate {target} " in ln]
        outputs[target] = line.split("--output ", 1)[1].split()[0]
    assert outputs == {"caption": "out/caption", "video": "out/video", "sft": "out/sft", "rl": "out/rl"}
    for target in ("sft", "rl"):
        run = dry(target)
        assert run.returncode != 0 and f"make {target} needs INPUT=" in run.stderr


def test_export_writes_a_datasets_folder_that_load_from_disk_reads(inputs, tmp_path, capsys) -> None:
    import datasets
    import webdataset as wds

    out, exported = tmp_path / "o", tmp_path / "hf"
    assert cli(capsys, *caption(inputs, out))[0] == 0
    rc, text, _ = cli(capsys, "export", "--run", str(out), "--output", str(exported))
    assert rc == 0 and "train:" in text
    loaded = datasets.load_from_disk(str(exported))["train"]
    shards = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    want = {s["__key__"]: s["jpg"] for s in wds.WebDataset(shards, shardshuffle=False)}
    assert loaded.num_rows == json.loads((out / "manifest.json").read_text())["totals"]["samples"] == len(want)
    got = {row["__key__"]: row["jpg"] for row in loaded.cast_column("jpg", datasets.Image(decode=False))}
    assert {k: v["bytes"] for k, v in got.items()} == want
    rc, _, err = cli(capsys, "export", "--run", str(tmp_path / "nothing"), "--output", str(tmp_path / "x"))
    assert rc == 2 and "no manifest.json" in err


def test_reading_commands_name_what_is_missing(tmp_path, capsys) -> None:
    """summary, overlay and select on a folder with no run, or on a protocol whose package is absent."""
    rc, _, err = cli(capsys, "summary", str(tmp_path))
    assert rc == 2 and "does not exist" in err
    rc, _, err = cli(capsys, "select", "--run", str(tmp_path), "--output", str(tmp_path / "s"))
    assert rc == 2 and "holds no manifest.json" in err
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        for args in (("summary", "gs://bucket/run"), ("select", "--run", "gs://bucket/run", "--output", str(tmp_path))):
            rc, _, err = cli(capsys, *args)
            assert rc == 2 and "pip install 'mmcurate[gcs]'" in err and "Traceback" not in err
