"""CLIP score and aesthetics through RunInference, on a tiny open_clip model built here.

The weights are random (no hub on these machines) but the loading path is the real one: an
architecture JSON added with open_clip.add_model_config, a state dict saved with torch.save and
loaded by open_clip.create_model_and_transforms(pretrained=path).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from tiny_models import build_tiny_clip
from webdataset import TarWriter

from mmcurate.cli import main
from mmcurate.pipelines.caption import CaptionConfig
from mmcurate.pipelines.models import validate_models
from mmcurate.stages.clip import AestheticParams, ClipParams, ModelUnavailable, check_weights
from mmcurate.stages.clip_model import ClipModelHandler, load_head


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny CLIP (32-d embeddings) and an aesthetic head shaped like LAION's improved predictor."""
    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def params(tiny: dict[str, str], **kw: object) -> ClipParams:
    return ClipParams(model="mmcurate-tiny-clip", pretrained=tiny["ckpt"], architecture=tiny["arch"], **kw)


def photo(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def test_scores_do_not_depend_on_batch_size(tiny: dict[str, str]) -> None:
    handler = ClipModelHandler(params(tiny, batch_size=8), aesthetic_weights=tiny["head"])
    model = handler.load_model()
    batch = [(photo(i), f"a photo number {i}") for i in range(7)]
    together = handler.run_inference(batch, model)
    alone = [handler.run_inference([ex], model)[0] for ex in batch]
    for a, b in zip(together, alone, strict=True):
        assert set(a) == {"clip_score", "aesthetic"}
        assert math.isclose(a["clip_score"], b["clip_score"], abs_tol=1e-5)
        assert math.isclose(a["aesthetic"], b["aesthetic"], abs_tol=1e-5)
        assert -1.0 <= a["clip_score"] <= 1.0
    assert len({round(o["clip_score"], 6) for o in together}) > 1  # real, differing outputs


def test_clip_score_is_the_cosine_of_open_clip_embeddings(tiny: dict[str, str]) -> None:
    """The handler's score equals open_clip's own encode_image/encode_text cosine on the same inputs."""
    import open_clip

    handler = ClipModelHandler(params(tiny))
    model = handler.load_model()
    img, text = photo(3), "a colourful noise image"
    (got,) = handler.run_inference([(img, text)], model)
    ref, _, preprocess = open_clip.create_model_and_transforms("mmcurate-tiny-clip", pretrained=tiny["ckpt"])
    tok = open_clip.get_tokenizer("mmcurate-tiny-clip")
    with torch.no_grad():
        a = ref.encode_image(preprocess(img)[None])
        b = ref.encode_text(tok([text]))
    want = torch.nn.functional.cosine_similarity(a, b).item()
    assert math.isclose(got["clip_score"], want, abs_tol=1e-5)


def test_aesthetic_head_matches_the_state_dict(tiny: dict[str, str]) -> None:
    head = load_head(tiny["head"])
    state = torch.load(tiny["head"], weights_only=True)
    x = torch.nn.functional.normalize(torch.randn(4, 32), dim=-1)
    y = x
    for idx in (0, 2, 4, 6, 7):
        y = y @ state[f"layers.{idx}.weight"].T + state[f"layers.{idx}.bias"]
    assert torch.allclose(head(x), y, atol=1e-6)


def test_missing_and_corrupt_weights_fail_before_running(tiny: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match=r"models.clip.pretrained: checkpoint .*nope.pt does not exist"):
        check_weights(params(tiny).model_copy(update={"pretrained": str(tmp_path / "nope.pt")}))
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x00not a checkpoint" * 100)
    with pytest.raises(ModelUnavailable, match="not a readable checkpoint"):
        check_weights(params(tiny).model_copy(update={"pretrained": str(bad)}))
    # A hub tag that is not in the cache, on a machine that cannot reach the hub: named, with the key.
    with pytest.raises(ModelUnavailable, match=r"models.clip.pretrained: weights laion/.* are not in the cache"):
        check_weights(ClipParams(model="ViT-B-32", pretrained="laion2b_s34b_b79k", cache_dir=str(tmp_path)))
    with pytest.raises(ModelUnavailable, match="unknown architecture"):
        check_weights(ClipParams(model="no-such-arch"))
    config = CaptionConfig(
        filters={"aesthetic": {"min": 5.0}},
        models={"clip": params(tiny).model_dump(), "aesthetic": {"weights": tiny["wide"]}},
    )
    with pytest.raises(ModelUnavailable, match=r"expects 768-d CLIP embeddings but models\.clip"):
        validate_models(config)
    with pytest.raises(ModelUnavailable, match=r"needs models\.aesthetic\.weights"):
        validate_models(CaptionConfig(filters={"aesthetic": {}}, models={"clip": params(tiny).model_dump()}))


def write_shard(path: Path, n: int) -> list[str]:
    """n photos, plus images a model could choke on: 1x1, 16-bit grey, CMYK."""
    keys = []
    with TarWriter(str(path), encoder=False) as sink:
        for i in range(n):
            img = photo(100 + i, (120 + i, 90))
            buf = __import__("io").BytesIO()
            img.save(buf, "JPEG", quality=90)
            sink.write({"__key__": f"p{i:03d}", "jpg": buf.getvalue(), "txt": f"coloured noise picture {i}".encode()})
            keys.append(f"p{i:03d}")
        odd = {
            "one_pixel": Image.new("RGB", (1, 1), (200, 10, 10)),
            "grey16": Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20),
            "cmyk": Image.new("CMYK", (80, 60), (10, 200, 30, 5)),
        }
        for key, img in odd.items():
            buf = __import__("io").BytesIO()
            img.save(buf, "TIFF" if img.mode != "RGB" else "PNG")
            sink.write(
                {
                    "__key__": key,
                    "tif" if img.mode != "RGB" else "png": buf.getvalue(),
                    "txt": f"odd image {key}".encode(),
                }
            )
            keys.append(key)
    return keys


def ledger(out: Path) -> dict[str, dict]:
    rows = [r for f in sorted((out / "ledger" / "caption").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return {r["source"]["member"]: r for r in rows}


def test_pipeline_scores_selects_top_fraction_and_reselects_without_the_model(
    tiny: dict[str, str], tmp_path: Path
) -> None:
    shard = tmp_path / "in.tar"
    keys = write_shard(shard, 20)
    models = f"""models:
  clip: {{model: mmcurate-tiny-clip, pretrained: {tiny["ckpt"]}, architecture: {tiny["arch"]}, batch_size: 4}}
  aesthetic: {{weights: {tiny["head"]}}}
dedup: {{near: false}}
"""
    cfg = tmp_path / "top.yaml"
    cfg.write_text("filters:\n  clip_score: {top_fraction: 0.3}\n  aesthetic: {}\n" + models)
    out = tmp_path / "out"
    assert main(["caption", "--input", str(shard), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    rows = ledger(out)
    assert set(rows) == set(keys)
    scored = {k: dict(r["scores"]) for k, r in rows.items()}
    # Every image, odd ones included, was scored by both heads on one tower (no model failure).
    assert all({"clip_score", "aesthetic"} <= set(s) for s in scored.values())
    kept = {k for k, r in rows.items() if r["fate"]["status"] == "kept"}
    assert {r["fate"]["reason"] for k, r in rows.items() if k not in kept} == {"clip_score_low"}
    # Top 30 % by clip_score over the run (23 records -> about 7), the highest ones.
    assert abs(len(kept) - 0.3 * len(rows)) <= 1.5
    assert min(scored[k]["clip_score"] for k in kept) >= max(scored[k]["clip_score"] for k in set(rows) - kept)
    metrics = json.loads((out / "metrics.json").read_text())
    # The image tower ran once per record (CLIP score and aesthetics share the encoding), in batches
    # of at most 4, and RunInference's own metrics reached the run summary. RunInference counts
    # elements: the records, and the unit's end marker (it passes through with no model call).
    assert metrics["counters"]["mmcurate_clip/num_inferences"] == len(rows) + 1
    sizes = metrics["distributions"]["mmcurate_clip/inference_request_batch_size"]
    assert sizes["max"] <= 4 and sizes["sum"] == len(rows) + 1
    assert "mmcurate_clip/load_model_latency_milli_secs" in metrics["distributions"]

    # Select with an absolute threshold from the ledger: the weights are gone, nothing is recomputed.
    Path(tiny["ckpt"]).rename(tiny["ckpt"] + ".away")
    try:
        cutoff = sorted(s["clip_score"] for s in scored.values())[len(scored) // 2]
        cfg2 = tmp_path / "abs.yaml"
        cfg2.write_text(f"filters:\n  clip_score: {{min: {cutoff}}}\n" + models)
        out2 = tmp_path / "out2"
        assert main(["select", "--run", str(out), "--output", str(out2), "--config", str(cfg2), "--no-progress"]) == 0
    finally:
        Path(tiny["ckpt"] + ".away").rename(tiny["ckpt"])
    rows2 = ledger(out2)
    assert {k for k, r in rows2.items() if r["fate"]["status"] == "kept"} == {
        k for k, s in scored.items() if s["clip_score"] >= cutoff
    }
    assert all(dict(rows2[k]["scores"]) == scored[k] for k in rows)


def test_missing_weights_stop_the_cli_with_the_key(
    tiny: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shard = tmp_path / "in.tar"
    write_shard(shard, 2)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "filters:\n  clip_score: {min: 0.2}\nmodels:\n  clip: {model: ViT-B-32, pretrained: "
        + str(tmp_path / "missing.pt")
        + "}\n"
    )
    assert main(["caption", "--input", str(shard), "--output", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    assert "models.clip.pretrained: checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_aesthetic_on_its_own_tower(tiny: dict[str, str]) -> None:
    """A second tower config is honoured: the aesthetic head then runs on its own handler."""
    from mmcurate.pipelines.models import model_stages

    copy = Path(tiny["ckpt"]).with_name("other.pt")
    copy.write_bytes(Path(tiny["ckpt"]).read_bytes())
    other = params(tiny, batch_size=2).model_copy(update={"pretrained": str(copy)}).model_dump()
    config = CaptionConfig(
        filters={"clip_score": {"min": 0.1}, "aesthetic": {"min": 1.0}},
        models={
            "clip": params(tiny).model_dump(),
            "aesthetic": AestheticParams(weights=tiny["head"], clip=other).model_dump(),
        },
    )
    names = [s.name for s in model_stages(config)]
    assert names == ["clip", "aesthetic"]
    shared = CaptionConfig(
        filters={"clip_score": {"min": 0.1}, "aesthetic": {"min": 1.0}},
        models={"clip": params(tiny).model_dump(), "aesthetic": {"weights": tiny["head"]}},
    )
    assert [s.name for s in model_stages(shared)] == ["clip"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_matches_cpu(tiny: dict[str, str]) -> None:
    batch = [(photo(i), f"caption {i}") for i in range(16)]
    cpu = ClipModelHandler(params(tiny, device="cpu"))
    gpu = ClipModelHandler(params(tiny, device="cuda"))
    a = cpu.run_inference(batch, cpu.load_model())
    b = gpu.run_inference(batch, gpu.load_model())
    assert all(abs(x["clip_score"] - y["clip_score"]) < 2e-2 for x, y in zip(a, b, strict=True))
