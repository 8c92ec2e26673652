"""The command line behaves like the tools our users know: strict options with suggestions, Beam's
options checked against Beam's own, `--version`, `--log-level`, `--limit` with books that still add
up, `--dry-run` that writes nothing, and make targets that never share an output folder."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
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


def test_bad_beam_values_and_a_separator_fail_in_one_line(inputs, tmp_path, capsys) -> None:
    """Not Beam's whole usage text, nor a suggestion to use the option that was given."""
    cases = {
        "--direct_num_workers=abc": "Beam option --direct_num_workers: invalid int value: 'abc'",
        "--save_main_session=True": "Beam option --save_main_session: ignored explicit argument 'True'",
    }
    for arg, message in cases.items():
        rc, _, err = cli(capsys, *caption(inputs, tmp_path / "o", "--dry-run", arg))
        assert rc == 2 and err == f"mmcurate caption: error: {message}"
    rc, _, err = cli(capsys, *caption(inputs, tmp_path / "o", "--dry-run", "--", "--runner=DirectRunner"))
    assert rc == 2 and "takes no `--` separator" in err and "did you mean" not in err
    assert not (tmp_path / "o").exists()


TRY_RUNNER = """
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineRunner


class TryRunnerOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--try_runner_address")


class TryRunner(PipelineRunner):
    pass
"""


def test_a_runner_outside_beams_options_module_brings_its_options(inputs, tmp_path, capsys, monkeypatch) -> None:
    """`--runner=pkg.mod.Runner` imports the module, as Beam will, so its own options (Dask's) are known."""
    (tmp_path / "mmcurate_try_runner.py").write_text(TRY_RUNNER)
    monkeypatch.syspath_prepend(str(tmp_path))
    rc, _, err = cli(capsys, *caption(inputs, tmp_path / "o", "--dry-run", "--try_runner_address=x"))
    assert rc == 2 and "unrecognized argument --try_runner_address" in err
    runner = "--runner=mmcurate_try_runner.TryRunner"
    assert cli(capsys, *caption(inputs, tmp_path / "o", "--dry-run", runner, "--try_runner_address=x"))[0] == 0
    dask = ["--runner=apache_beam.runners.dask.dask_runner.DaskRunner", "--dask_client_address=localhost:8786"]
    rc, _, err = cli(capsys, *caption(inputs, tmp_path / "o", "--dry-run", *dask))
    if importlib.util.find_spec("dask") is None:  # Beam's dask extra absent: the flag is unknown, and we say why
        assert rc == 2 and "unrecognized argument --dask_client_address" in err and "cannot be imported" in err
    else:
        assert rc == 0
    assert not (tmp_path / "o").exists()


def test_an_unforeseen_failure_prints_a_traceback_without_the_secrets(inputs, tmp_path, capsys, monkeypatch) -> None:
    """s3fs takes `user:password@bucket` for the bucket's name and botocore refuses it: an error we do
    not catch as a user's. The traceback quotes the password without its URI, and still never shows it."""
    pytest.importorskip("s3fs")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: no request leaves
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    secret = "pa55-w0rd-curator"
    rc, out, err = cli(capsys, *caption(inputs, f"s3://curator:{secret}@bucket/out", "--dry-run"))  # type: ignore[arg-type]
    assert rc == 1 and "internal error" in err and "Traceback (most recent call last)" in err
    assert "curator:<redacted>@bucket" in err
    assert secret not in out and secret not in err


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
    for stderr in (helped.stderr, version.stderr):  # another library's warning may show; Beam's noise never
        assert "apitools not found" not in stderr and "Discarding unparseable args" not in stderr


def test_dry_run_writes_nothing_and_counts_the_inputs(inputs, tmp_path, capsys) -> None:
    out = tmp_path / "o"
    rc, text, _ = cli(capsys, *caption(inputs, out, "--dry-run"))
    assert rc == 0 and not out.exists()
    assert "dry run, 5 units" in text  # jsonl lines 1-4, 5-8, 9-10; the parquet; the tar
    assert "records in the inputs: 17 (+ 1 tar units, counted only when read)" in text
    assert "holds no run: the run starts fresh" in text


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_and_resume_exclude_each_other(inputs, tmp_path, capsys) -> None:
    for args in (
        caption(inputs, tmp_path / "o", "--dry-run", "--overwrite", "--resume"),
        ["select", "--run", str(tmp_path), "--output", str(tmp_path / "s"), "--resume", "--overwrite"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()


def test_dry_run_refuses_what_the_run_refuses_and_changes_nothing(inputs, tmp_path, capsys) -> None:
    out = tmp_path / "o"
    assert cli(capsys, *caption(inputs, out))[0] == 0
    (out / "notes.txt").write_text("the user's own file")
    before = _snapshot(out)
    # A folder holding a run and no flag: the dry run fails as the run does, with its error.
    dry = cli(capsys, *caption(inputs, out, "--dry-run"))
    real = cli(capsys, *caption(inputs, out))
    assert dry[0] == real[0] == 2 and dry[2] == real[2] and "already holds a run" in dry[2]
    # --resume with a changed config: refused, naming what changed.
    dry = cli(capsys, *caption(inputs, out, "--dry-run", "--resume", "--limit", "4"))
    real = cli(capsys, *caption(inputs, out, "--resume", "--limit", "4"))
    assert dry[0] == real[0] == 2 and dry[2] == real[2] and "the config differ" in dry[2]
    # --resume of the same, finished run: nothing would run.
    rc, text, _ = cli(capsys, *caption(inputs, out, "--dry-run", "--resume"))
    assert rc == 0 and "--resume would run nothing" in text
    # --overwrite: what it would delete (everything but the user's file), and nothing is deleted.
    rc, text, _ = cli(capsys, *caption(inputs, out, "--dry-run", "--overwrite"))
    assert rc == 0 and f"--overwrite would delete the {len(before) - 1} files it wrote" in text
    assert "1 file it did not write stay (notes.txt)" in text
    assert _snapshot(out) == before


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


def test_dry_run_tells_what_a_resume_would_skip_and_tidies_nothing(inputs, tmp_path, capsys) -> None:
    """A run killed (SIGKILL, its whole process group) once two units are committed."""
    out = tmp_path / "o"
    env = {**os.environ, "MMCURATE_FAILPOINT": "committed:2"}
    cmd = [sys.executable, "-m", "mmcurate", *caption(inputs, out)]
    killed = subprocess.run(cmd, env=env, start_new_session=True, capture_output=True, text=True, timeout=300)
    assert killed.returncode != 0 and (out / "_work" / "run.json").is_file() and not (out / "manifest.json").exists()
    before = _snapshot(out)
    rc, text, _ = cli(capsys, *caption(inputs, out, "--dry-run", "--resume"))
    done = re.search(r"--resume would skip its (\d+) committed units", text)
    assert rc == 0 and done and 2 <= int(done.group(1)) < 5, text
    assert _snapshot(out) == before


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


def test_export_never_writes_into_the_run_nor_over_files_unasked(inputs, tmp_path, capsys) -> None:
    import datasets

    out, exported = tmp_path / "o", tmp_path / "hf"
    assert cli(capsys, *caption(inputs, out))[0] == 0
    run = _snapshot(out)
    for target in (out, out / "hf", out / "shards"):
        rc, _, err = cli(capsys, "export", "--run", str(out), "--output", str(target), "--overwrite")
        assert rc == 2 and "inside the run folder" in err
    rc, _, err = cli(capsys, "export", "--run", str(out), "--output", str(tmp_path), "--overwrite")
    assert rc == 2 and "holds the run" in err
    assert _snapshot(out) == run
    # A folder that holds files is replaced only with --overwrite.
    exported.mkdir()
    (exported / "mine.txt").write_text("not an export")
    rc, _, err = cli(capsys, "export", "--run", str(out), "--output", str(exported))
    assert rc == 2 and "is not empty: pass --overwrite" in err and (exported / "mine.txt").exists()
    rc, _, _ = cli(capsys, "export", "--run", str(out), "--output", str(exported), "--overwrite")
    assert rc == 0 and not (exported / "mine.txt").exists()
    assert (
        datasets.load_from_disk(str(exported))["train"].num_rows
        == json.loads(run["manifest.json"])["totals"]["samples"]
    )
    assert _snapshot(out) == run


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


def test_credentials_on_the_command_line_are_refused_and_never_printed(inputs, tmp_path, capsys) -> None:
    """Beam's workers log their options whatever our log level: a credential flag is refused, unechoed."""
    secret = "SuperSecret99value"
    for flag in ([f"--s3_secret_access_key={secret}"], ["--s3_session_token", secret]):
        rc, out, err = cli(capsys, *caption(inputs, tmp_path / "o", *flag))
        assert rc == 2 and "credentials are not taken on the command line" in err
        assert secret not in out + err
    assert not (tmp_path / "o").exists()


def test_an_option_that_needs_another_is_refused_alone(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """`ocr --reasons` only picks among a caption run's drops: without `--from-run` it is a usage error
    (before any input is listed), never silently ignored."""
    rc, _, err = cli(
        capsys, "ocr", "--input", str(tmp_path), "--reasons", "text_heavy", "--output", str(tmp_path / "o")
    )
    assert rc != 0 and "--reasons applies only with --from-run" in err


def test_input_given_twice_reads_both(tmp_path: Path) -> None:
    """`--input a --input b` is both inputs (argparse's default would silently keep only b)."""
    from mmcurate.cli import parser

    args = parser().parse_args(["caption", "--input", "a", "--input", "b", "c", "--output", str(tmp_path)])
    assert args.input == ["a", "b", "c"]
