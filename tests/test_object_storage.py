"""Object storage end to end: the caption CLI reading from and writing to S3, served by a real moto
server on loopback (s3fs talks HTTP to it; nothing is mocked), against the same run on local files.
Also: a URI whose filesystem package is not installed, and a memory:// output, are refused with an
error that says why before a run starts, never with a traceback from inside one."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from moto_s3 import moto_s3
from PIL import Image
from webdataset import TarWriter

from mmcurate.cli import main
from mmcurate.pipelines.caption import CORPUS
from mmcurate.pipelines.run import OutputError, check_output_uri, execute
from mmcurate.stages.io import InputError
from mmcurate.stages.io.paths import filesystem

pytest.importorskip("moto.server", reason="moto[server] (the test extra) runs the loopback S3")
s3fs = pytest.importorskip("s3fs", reason="s3fs (the s3 and test extras) is fsspec's s3:// filesystem")

pytestmark = pytest.mark.slow

BUCKET = "mmcurate-test"
RULES = """filters:
  file_size: {min_bytes: 1024}
  min_side: {min: 64}
  aspect_ratio: {max: 3.0}
  caption_length: {}
  language: {allowed: [en], min_prob: 0.5}
"""
EXPECTED_COUNTS = {"input": 9, "kept": 4, "dropped": 3, "quarantined": 2}
"""What `write_corpus` holds, sample by sample (see there)."""


def write_corpus(root: Path, photo: Callable[..., Image.Image], to_bytes: Callable[..., bytes]) -> None:
    """Two webdataset shards and a LLaVA-style jsonl with relative image paths (resolved on S3 too)."""
    a = to_bytes(photo((320, 240), 1))
    shards = [
        [("k0", a, "A colourful abstract texture with soft gradients"),  # kept
         ("k1", a, "The same texture again under another caption"),  # dropped: duplicate_exact
         ("k2", to_bytes(photo((48, 40), 2)), "A tiny thumbnail of coloured noise")],  # dropped: too_small
        [("k3", to_bytes(photo((320, 240), 3)), "Blurred coloured squares blending into each other"),  # kept
         ("k4", to_bytes(photo((320, 240), 4)), ""),  # dropped: caption_empty
         ("k5", b"this is not an image at all", "A text file pretending to be a JPEG")],  # quarantined
    ]  # fmt: skip
    (root / "shards").mkdir(parents=True)
    for n, samples in enumerate(shards):
        with TarWriter(str(root / "shards" / f"in-{n:03d}.tar"), encoder=False, mtime=0) as sink:
            for key, img, caption in samples:
                sink.write({"__key__": key, "jpg": img, "txt": caption.encode()})
    (root / "llava" / "imgs").mkdir(parents=True)
    rows = []
    for name, seed, caption in (("a", 5, "A soft pattern of warm and cool colours"),
                                ("b", 6, "Patches of colour fading softly into one another")):  # fmt: skip
        (root / "llava" / "imgs" / f"{name}.jpg").write_bytes(to_bytes(photo((320, 240), seed)))
        rows.append({"image": f"imgs/{name}.jpg", "caption": caption})  # kept
    rows.append({"image": "imgs/missing.jpg", "caption": "An image nobody uploaded"})  # quarantined
    (root / "llava" / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def inputs_under(root: str) -> list[str]:
    return [f"{root}/shards", f"{root}/llava/d.jsonl"]


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """A moto S3 server on a free loopback port with one empty bucket, and an s3fs filesystem on it
    (tests/moto_s3.py); the environment points every s3:// URI of the run at it."""
    with moto_s3(monkeypatch, tmp_path, BUCKET) as fs:
        yield fs


def run_caption(inputs: list[str], output: str, config: Path, *beam: str) -> int:
    return main(["caption", "--input", *inputs, "--output", output, "--config", str(config), "--no-progress", *beam])


def shard_keys(manifest: dict, read: Callable[[str], bytes]) -> list[str]:
    """Sample keys of every shard the manifest lists, each shard checked against its sha256 and size."""
    keys = []
    for shard in manifest["files"]["shards"]:
        data = read(shard["path"])
        assert hashlib.sha256(data).hexdigest() == shard["sha256"] and len(data) == shard["bytes"]
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            keys += sorted({name.split(".")[0] for name in tf.getnames()})
    return sorted(keys)


def test_caption_run_on_s3_matches_the_local_run(
    s3: Any, tmp_path: Path, photo: Callable[..., Image.Image], to_bytes: Callable[..., bytes]
) -> None:
    local_in, local_out = tmp_path / "in", tmp_path / "out"
    write_corpus(local_in, photo, to_bytes)
    config = tmp_path / "rules.yaml"
    config.write_text(RULES)
    assert run_caption(inputs_under(str(local_in)), str(local_out), config) == 0
    local = json.loads((local_out / "manifest.json").read_text())
    assert local["accounting_ok"]
    assert local["kinds"]["caption"]["counts"] == EXPECTED_COUNTS

    s3.put(str(local_in), f"{BUCKET}/in", recursive=True)
    assert sorted(s3.find(f"{BUCKET}/in")) == sorted(
        f"{BUCKET}/in/{p.relative_to(local_in).as_posix()}" for p in local_in.rglob("*") if p.is_file()
    )
    out = f"s3://{BUCKET}/out"
    assert run_caption(inputs_under(f"s3://{BUCKET}/in"), out, config) == 0
    remote = json.loads(s3.cat_file(f"{BUCKET}/out/manifest.json"))
    assert remote["accounting_ok"]
    for field in ("counts", "reasons"):
        assert remote["kinds"]["caption"][field] == local["kinds"]["caption"][field], field
    assert remote["inputs"] == inputs_under(f"s3://{BUCKET}/in")
    remote_keys = shard_keys(remote, lambda rel: s3.cat_file(f"{BUCKET}/out/{rel}"))
    local_keys = shard_keys(local, lambda rel: (local_out / rel).read_bytes())
    assert remote_keys == local_keys and len(remote_keys) == EXPECTED_COUNTS["kept"]
    assert not s3.exists(f"{BUCKET}/out/_work") and not [p for p in s3.find(f"{BUCKET}/out") if ".tmp-" in p]


def _absent(module: str) -> None:
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here: its missing-package error cannot be seen")


@pytest.mark.parametrize("side", ["input", "output"])
def test_a_missing_filesystem_package_names_the_extra(
    side: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], photo: Callable[..., Image.Image],
    to_bytes: Callable[..., bytes],
) -> None:  # fmt: skip
    """gcsfs is in no extra the tests install: a gs:// URI is a CLI error saying what to install."""
    _absent("gcsfs")
    write_corpus(tmp_path / "in", photo, to_bytes)
    (tmp_path / "rules.yaml").write_text(RULES)
    if side == "input":
        rc = run_caption(["gs://bucket/in/shards"], str(tmp_path / "out"), tmp_path / "rules.yaml")
    else:
        rc = run_caption(inputs_under(str(tmp_path / "in")), "gs://bucket/out", tmp_path / "rules.yaml")
    err = capsys.readouterr().err
    assert rc == 2
    assert f"mmcurate: error: {side} gs://bucket/" in err and "needs gcsfs: pip install 'mmcurate[gcs]'" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_other_protocols_name_the_package_fsspec_names() -> None:
    _absent("adlfs")
    with pytest.raises(InputError, match=r"abfs://box/x needs adlfs: pip install adlfs"):
        filesystem("abfs://box/x", InputError)
    with pytest.raises(OutputError, match=r"fsspec knows no s4:// filesystem"):
        filesystem("s4://bucket/x", OutputError)


def test_memory_output_is_refused_unless_read_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], photo: Callable[..., Image.Image],
    to_bytes: Callable[..., bytes],
) -> None:  # fmt: skip
    """memory:// lives in one process: refused for the CLI and for workers in other processes; an
    in-process caller (allow_memory) gets a complete run it can read back."""
    write_corpus(tmp_path / "in", photo, to_bytes)
    (tmp_path / "rules.yaml").write_text(RULES)
    config = CORPUS.load_config(str(tmp_path / "rules.yaml"))
    inputs = inputs_under(str(tmp_path / "in"))
    units = CORPUS.list_units(inputs, config)
    out = f"memory://mmcurate-out-{uuid.uuid4().hex[:8]}"
    fs, root = filesystem(out, OutputError)
    try:
        with pytest.raises(OutputError, match="memory:// lives in this process"):
            execute(CORPUS, config, inputs, units, out, [], progress=False)
        assert not fs.exists(root)
        assert run_caption(inputs, out, tmp_path / "rules.yaml") == 2
        assert "mmcurate: error: output memory://" in capsys.readouterr().err
        for beam in (["--direct_running_mode=multi_processing", "--direct_num_workers=2"], ["--runner=PortableRunner"]):
            with pytest.raises(OutputError, match="workers in other processes"):
                check_output_uri(out, beam, in_process=True)
            with pytest.raises(OutputError, match="workers in other processes"):
                execute(CORPUS, config, inputs, units, out, beam, progress=False, allow_memory=True)
        check_output_uri(out, ["--direct_running_mode=multi_threading", "--direct_num_workers=2"], in_process=True)
        manifest = execute(CORPUS, config, inputs, units, out, [], progress=False, allow_memory=True)
        assert manifest["accounting_ok"] and manifest["kinds"]["caption"]["counts"] == EXPECTED_COUNTS
        assert fs.exists(f"{root}/manifest.json")
    finally:
        if fs.exists(root):
            fs.rm(root, recursive=True)
