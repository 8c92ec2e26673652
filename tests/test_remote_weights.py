"""Model weights named by object-storage URLs (what a cluster's config does: every worker loads the
checkpoint from the bucket): the real loading code of CLIP, the aesthetic head and a transformers
rollout model, against moto's S3 on loopback, gives what the local files give; each file is copied
once into the machine's cache and again only when the object changes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from tiny_models import build_tiny_clip, build_tiny_llama
from webdataset import TarWriter

from mmcurate.cli import main
from mmcurate.stages.base import ModelUnavailable
from mmcurate.stages.clip import ClipParams, check_weights
from mmcurate.stages.io.weights import CACHE_ENV, local_copy
from mmcurate.stages.rollout.params import TransformersParams
from mmcurate.stages.rollout.transformers_backend import TransformersRolloutHandler, check_model

BUCKET = "weights"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from moto_s3 import moto_s3

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "weights-cache"))
    with moto_s3(monkeypatch, tmp_path, BUCKET) as fs:
        yield fs


def _shard(path: Path, n: int = 6) -> None:
    with TarWriter(str(path)) as w:
        for i in range(n):
            buf = io.BytesIO()
            Image.new("RGB", (96 + 8 * i, 80), (40 * i % 255, 90, 200 - 20 * i)).save(buf, "JPEG")
            w.write({"__key__": f"k{i}", "jpg": buf.getvalue(), "txt": f"a plain colour card number {i}"})


def _scores(out: Path) -> dict[str, dict[str, float]]:
    rows = [r for f in sorted((out / "ledger" / "caption").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return {r["source"]["member"]: dict(r["scores"]) for r in rows}


def _cached(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "weights-cache").rglob("*") if p.is_file() and not p.name.startswith("."))


def test_clip_and_aesthetic_weights_from_s3_score_as_the_local_files(s3, tmp_path: Path) -> None:
    (tmp_path / "tiny").mkdir()
    tiny = build_tiny_clip(tmp_path / "tiny")
    for name in ("ckpt", "arch", "head"):
        s3.put(tiny[name], f"{BUCKET}/clip/{Path(tiny[name]).name}")
    remote = {k: f"s3://{BUCKET}/clip/{Path(v).name}" for k, v in tiny.items() if k in ("ckpt", "arch", "head")}
    shard = tmp_path / "in.tar"
    _shard(shard)

    def run(weights: dict[str, str], out: Path) -> dict[str, dict[str, float]]:
        cfg = tmp_path / f"{out.name}.yaml"
        cfg.write_text(
            "filters:\n  clip_score: {min: -1.0}\n  aesthetic: {}\ndedup: {near: false}\nmodels:\n"
            f"  clip: {{model: mmcurate-tiny-clip, pretrained: '{weights['ckpt']}',\n"
            f"         architecture: '{weights['arch']}'}}\n"
            f"  aesthetic: {{weights: '{weights['head']}'}}\n"
        )
        args = ["caption", "--input", str(shard), "--output", str(out), "--config", str(cfg), "--no-progress"]
        assert main([*args, "--no-report"]) == 0
        return _scores(out)

    local = run({k: tiny[k] for k in ("ckpt", "arch", "head")}, tmp_path / "local")
    from_s3 = run(remote, tmp_path / "s3")
    assert set(local) == set(from_s3) and len(local) == 6
    assert all({"clip_score", "aesthetic"} <= set(s) for s in local.values())
    assert from_s3 == local  # the same weights, loaded by the same code
    cached = _cached(tmp_path)
    assert sorted(p.name for p in cached) == sorted(Path(v).name for v in remote.values())
    stamps = [p.stat().st_mtime_ns for p in cached]
    run(remote, tmp_path / "s3-again")
    assert [p.stat().st_mtime_ns for p in _cached(tmp_path)] == stamps  # copied once, not per run
    s3.pipe(f"{BUCKET}/clip/{Path(tiny['head']).name}", Path(tiny["ckpt"]).read_bytes()[:64])  # replaced object
    assert local_copy(remote["head"]) not in {str(p) for p in cached}  # a new version is a new cache entry


def test_missing_remote_weights_fail_before_the_run_naming_the_key(s3, tmp_path: Path) -> None:
    params = ClipParams(model="ViT-B-32", pretrained=f"s3://{BUCKET}/nowhere/model.pt")
    with pytest.raises(ModelUnavailable, match=rf"^models\.clip\.pretrained: s3://{BUCKET}/nowhere/model\.pt does not"):
        check_weights(params)
    with pytest.raises(ModelUnavailable, match=r"^rollout\.transformers\.model: .* does not exist"):
        check_model(TransformersParams(model=f"s3://{BUCKET}/no-model"))


def test_transformers_model_folder_from_s3_loads_as_the_local_one(s3, tmp_path: Path) -> None:
    import torch

    folder = build_tiny_llama(tmp_path / "llama")
    s3.put(str(folder), f"{BUCKET}/llama", recursive=True)
    remote = TransformersParams(model=f"s3://{BUCKET}/llama", device="cpu")
    check_model(remote)
    a = TransformersRolloutHandler(TransformersParams(model=str(folder), device="cpu")).load_model()
    b = TransformersRolloutHandler(remote).load_model()
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab() and (a.eos_ids, a.pad_id) == (b.eos_ids, b.pad_id)
    (entry,) = (tmp_path / "weights-cache").iterdir()
    copied = sorted(p.relative_to(entry / "llama") for p in (entry / "llama").rglob("*") if p.is_file())
    assert copied == sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    assert json.loads((entry / "llama" / "config.json").read_text()) == json.loads((folder / "config.json").read_text())


def test_paddle_model_folders_on_s3_are_checked_where_they_are(s3, tmp_path: Path) -> None:
    """PaddleOCR cannot run here; what can: the driver's check of bucket model folders (the worker
    copies them once, through the same cache as the other weights)."""
    from mmcurate.stages.ocr import OcrParams, check_backend

    s3.pipe(f"{BUCKET}/paddle/det/inference.yml", b"Global: {model_name: PP-OCRv5_mobile_det}\n")
    params = OcrParams(backend="paddleocr", det_model_dir=f"s3://{BUCKET}/paddle/det",
                       rec_model_dir=f"s3://{BUCKET}/paddle/rec")  # fmt: skip
    with pytest.raises(ModelUnavailable) as info:
        check_backend(params)
    problems = str(info.value)
    assert f"models.ocr.rec_model_dir = 's3://{BUCKET}/paddle/rec'" in problems and "does not exist" in problems
    assert "det_model_dir = " not in problems  # the folder that is there passes
    copied = Path(local_copy(f"s3://{BUCKET}/paddle/det"))
    assert (copied / "inference.yml").read_bytes().startswith(b"Global:")
