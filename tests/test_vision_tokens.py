"""The vision-token estimate equals what transformers' own image processors compute, image for image.

Every expected grid here comes from transformers (its `Qwen2VLImageProcessor` and `Glm4vImageProcessor`,
both backends, run on real PIL images; its `smart_resize` functions for the wide sweeps), never from
the module under test.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError
from skimage import data as skdata

from mmcurate.schemas import DocumentRecord, Fate, ImageSlot, Source, Status, reason
from mmcurate.stages.base import load_filters
from mmcurate.stages.image_decode import DecodeParams, EncodeParams, decode, encode
from mmcurate.stages.vision_tokens import (
    ImageRefused,
    VisionTokenParams,
    VisionTokens,
    image_grid,
    image_tokens,
    output_size,
)

transformers = pytest.importorskip("transformers")
from transformers.models.glm4v import image_processing_glm4v as hf_glm  # noqa: E402
from transformers.models.qwen2_vl import image_processing_qwen2_vl as hf_qwen  # noqa: E402

GLM45V = {"shortest_edge": 12544, "longest_edge": 9633792}
"""GLM-4.5V's (and the GLM-V family's) published preprocessor_config.json `size`."""

SETTINGS: dict[str, dict[str, Any]] = {
    # policy-default: the budgets the model cards publish
    "glm4v-default": {"policy": "glm4v"},
    "qwen2_vl-default": {"policy": "qwen2_vl", "min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280},
    # non-default budgets (tight, so many sizes hit both the floor and the ceiling) and a patch of 16
    "glm4v-tight": {"policy": "glm4v", "min_pixels": 2 * 28 * 28 * 64, "max_pixels": 2 * 28 * 28 * 256},
    "qwen2_vl-tight": {"policy": "qwen2_vl", "min_pixels": 28 * 28 * 256, "max_pixels": 28 * 28 * 512},
    "qwen2_vl-patch16": {
        "policy": "qwen2_vl",
        "patch_size": 16,
        "merge_size": 2,
        "min_pixels": 32 * 32 * 4,
        "max_pixels": 32 * 32 * 2048,
    },
}

SIZES = [  # (width, height)
    (1, 1),
    (3, 1),
    (1, 3),
    (3, 3),
    (27, 27),
    (28, 28),
    (29, 57),
    (1, 150),  # a sliver under the ratio bound
    (2, 400),  # exactly ratio 200: allowed
    (10, 1000),
    (1000, 7),
    (64, 64),
    (224, 224),
    (333, 777),
    (640, 480),
    (480, 640),
    (1024, 768),
    (1023, 769),
    (1920, 1080),
    (1080, 1920),
    (2048, 2048),
    (4000, 3000),
    (3000, 4000),
    (8000, 6000),
    (7001, 99),
]
REFUSED = [(1, 1000), (2, 401), (5, 1001), (1000, 1), (6000, 20)]
"""Long side over 200 times the short side: both processors raise ValueError."""


def params_of(name: str, **extra: Any) -> VisionTokenParams:
    return VisionTokenParams(**SETTINGS[name], **extra)


def processor(p: VisionTokenParams, backend: str) -> Any:
    """transformers' own processor for these settings (no weights: a processor is arithmetic + resize)."""
    common = {"patch_size": p.patch_size, "merge_size": p.merge_size, "temporal_patch_size": p.temporal_patch_size}
    size = {"shortest_edge": p.min_pixels, "longest_edge": p.max_pixels}
    if p.policy == "glm4v":
        cls = transformers.Glm4vImageProcessor if backend == "torchvision" else transformers.Glm4vImageProcessorPil
    else:
        cls = transformers.Qwen2VLImageProcessor if backend == "torchvision" else transformers.Qwen2VLImageProcessorPil
    return cls(size=size, **common)


_PROCESSORS: dict[tuple[str, str], Any] = {}


def cached_processor(name: str, backend: str) -> Any:
    key = (name, backend)
    if key not in _PROCESSORS:
        _PROCESSORS[key] = processor(params_of(name), backend)
    return _PROCESSORS[key]


def hf_grid(proc: Any, width: int, height: int) -> tuple[int, int, int]:
    img = Image.new("RGB", (width, height), (200, 120, 40))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = proc(images=img, return_tensors="pt")
    (row,) = out["image_grid_thw"].tolist()
    return tuple(row)


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize(("width", "height"), SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_grid_equals_the_torchvision_processor(setting: str, width: int, height: int) -> None:
    p = params_of(setting)
    expected = hf_grid(cached_processor(setting, "torchvision"), width, height)
    assert image_grid(height, width, p) == expected
    t, gh, gw = expected
    assert image_tokens(height, width, p) == t * gh * gw // p.merge_size**2


@pytest.mark.parametrize("setting", ["glm4v-default", "qwen2_vl-default", "glm4v-tight"])
@pytest.mark.parametrize(("width", "height"), SIZES[:-4], ids=[f"{w}x{h}" for w, h in SIZES[:-4]])
def test_grid_equals_the_pil_processor(setting: str, width: int, height: int) -> None:
    """The PIL backend agrees too (the huge sizes are left to the torchvision test: same arithmetic)."""
    assert image_grid(height, width, params_of(setting)) == hf_grid(cached_processor(setting, "pil"), width, height)


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize(("width", "height"), REFUSED, ids=[f"{w}x{h}" for w, h in REFUSED])
def test_extreme_aspect_ratio_is_refused_like_the_processor(setting: str, width: int, height: int) -> None:
    """transformers raises ValueError for a ratio over 200 (GLM after scaling a short side up to 28);
    we raise ImageRefused, a ValueError, for exactly the same images."""
    with pytest.raises(ValueError, match="aspect ratio"):
        hf_grid(cached_processor(setting, "torchvision"), width, height)
    with pytest.raises(ImageRefused, match="aspect ratio"):
        image_grid(height, width, params_of(setting))
    assert issubclass(ImageRefused, ValueError)


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "rocket", "camera"])
def test_real_photographs_through_decode(name: str) -> None:
    """scikit-image's photographs, JPEG-encoded and decoded by our decode stage: the size the decode
    stage reports gives the grid the processor computes on those very pixels."""
    arr = getattr(skdata, name)()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=92)
    img = decode(buf.getvalue(), DecodeParams())
    for setting in ("glm4v-default", "qwen2_vl-default", "qwen2_vl-tight"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = cached_processor(setting, "torchvision")(images=img.image, return_tensors="pt")
        (row,) = out["image_grid_thw"].tolist()
        assert image_grid(img.height, img.width, params_of(setting)) == tuple(row)


def _hf_smart_resize(p: VisionTokenParams, height: int, width: int) -> tuple[int, int]:
    factor = p.patch_size * p.merge_size
    if p.policy == "glm4v":  # as Glm4vImageProcessor.resize calls it for an image
        return hf_glm.smart_resize(
            num_frames=p.temporal_patch_size,
            height=height,
            width=width,
            temporal_factor=p.temporal_patch_size,
            factor=factor,
            min_pixels=p.min_pixels,
            max_pixels=p.max_pixels,
        )
    return hf_qwen.smart_resize(height, width, factor=factor, min_pixels=p.min_pixels, max_pixels=p.max_pixels)


@settings(max_examples=3000, deadline=None)
@given(
    setting=st.sampled_from(list(SETTINGS)),
    height=st.integers(1, 20000),
    width=st.integers(1, 20000),
)
def test_sweep_equals_transformers_smart_resize(setting: str, height: int, width: int) -> None:
    """Thousands of sizes against transformers' own resize functions (what the processors call)."""
    p = params_of(setting)
    try:
        h, w = _hf_smart_resize(p, height, width)
    except ValueError:
        with pytest.raises(ImageRefused):
            image_grid(height, width, p)
        return
    assert image_grid(height, width, p) == (1, h // p.patch_size, w // p.patch_size)


def test_grid_is_what_get_number_of_image_patches_counts() -> None:
    """The processors' own size-only count (vLLM uses it) agrees on every size of a grid."""
    for setting in ("glm4v-default", "qwen2_vl-default"):
        proc, p = cached_processor(setting, "torchvision"), params_of(setting)
        for height in range(1, 3000, 97):
            for width in range(15, 3000, 89):
                try:
                    patches = proc.get_number_of_image_patches(height, width, {})
                except ValueError:
                    continue
                t, gh, gw = image_grid(height, width, p)
                assert t * gh * gw == patches


def test_default_budget_caps_an_image_at_6144_tokens() -> None:
    """GLM-4.5V's longest_edge 9633792 = 14*14*2*2*2*6144: no image exceeds 6144 tokens, and the
    processor built from that config agrees on the biggest ones."""
    p = VisionTokenParams()
    assert (p.min_pixels, p.max_pixels) == (GLM45V["shortest_edge"], GLM45V["longest_edge"])
    assert p.max_pixels == p.patch_size**2 * p.merge_size**2 * p.temporal_patch_size * 6144
    proc = transformers.Glm4vImageProcessor(size=GLM45V)
    for w, h in [(8000, 6000), (12000, 12000), (20000, 300), (2194, 2194), (2184, 2184)]:
        tokens = image_tokens(h, w, p)
        assert tokens <= 6144
        assert tokens * p.merge_size**2 == proc.get_number_of_image_patches(h, w, {})


def test_bare_glm4v_processor_has_another_budget() -> None:
    """`Glm4vImageProcessor()` without a config uses 28*28*15000 (7500 tokens): why max_pixels is a
    parameter to set from the trainer's checkpoint, not a constant."""
    bare = transformers.Glm4vImageProcessor()
    assert bare.size["longest_edge"] == 28 * 28 * 15000
    p = VisionTokenParams(max_pixels=bare.size["longest_edge"], min_pixels=bare.size["shortest_edge"])
    assert image_grid(6000, 8000, p) == hf_grid(bare, 8000, 6000)
    assert image_tokens(6000, 8000, p) > image_tokens(6000, 8000, VisionTokenParams())


def test_params_are_checked() -> None:
    with pytest.raises(ValidationError):
        VisionTokenParams(policy="llava")
    with pytest.raises(ValidationError):
        VisionTokenParams(min_pixels=10_000, max_pixels=100)
    with pytest.raises(ValidationError):
        VisionTokenParams(patch_size=0)
    with pytest.raises(ValidationError):
        VisionTokens.Params(max_tokens=-1)
    with pytest.raises(ValidationError):
        VisionTokens.Params(min_pixel=5)  # a typo is an error, not ignored
    with pytest.raises(ValueError):
        image_grid(0, 100, VisionTokenParams())


@pytest.mark.parametrize(("width", "height"), [(4000, 3000), (3000, 4000), (1024, 768), (512, 100), (100, 7), (9, 9)])
def test_output_size_is_what_encode_writes(width: int, height: int) -> None:
    """The encode stage's real output size, so an estimate can be made for the downscaled shards."""
    img = Image.new("RGB", (width, height), (10, 200, 30))
    _, out_w, out_h = encode(img, EncodeParams(max_side=512))
    assert output_size(height, width, 512) == (out_h, out_w)
    assert output_size(height, width, 0) == (height, width)


# ------------------------------------------------------------------------------------------- the filter


def slot(i: int, width: int, height: int, fate: Fate | None = None, **kw: Any) -> ImageSlot:
    return ImageSlot(
        id=f"img{i}",
        source=Source("mem://doc.jsonl", 0, "3", 3),
        doc_id="doc",
        slot=i,
        width=width,
        height=height,
        fate=fate or Fate(),
        **kw,
    )


def document(slots: list[ImageSlot]) -> DocumentRecord:
    return DocumentRecord(
        id="doc",
        source=Source("mem://doc.jsonl", 0, "3", 3),
        layout="mmc4",
        texts=["a", "b"],
        images=len(slots),
        slots=slots,
    )


def test_filter_sums_what_the_processor_makes_of_the_live_slots() -> None:
    f = VisionTokens()
    proc = transformers.Glm4vImageProcessor(size=GLM45V)
    live = [(1024, 768), (4000, 3000), (300, 200)]
    slots = [slot(i, w, h) for i, (w, h) in enumerate(live)]
    slots += [
        slot(3, 8000, 6000, Fate(Status.DROPPED, "too_small")),  # settled: not in the document any more
        slot(4, 8000, 6000, Fate(Status.QUARANTINED, "undecodable")),
        slot(5, 0, 0),  # did not decode
        slot(6, 640, 480, Fate(Status.KEPT)),  # kept: counts
    ]
    scores, labels = f.score(document(slots))
    per_image = [
        (lambda t: t[0] * t[1] * t[2] // 4)(hf_grid(proc, w, h)) for w, h in [*live, (640, 480)]
    ]  # merge_size 2
    assert scores == {"vision_tokens": sum(per_image), "max_image_tokens": max(per_image), "refused_images": 0.0}
    assert labels == {}
    assert f.decide(scores, labels) is None  # about 8.3k tokens: under the 16384 default
    assert VisionTokens(VisionTokens.Params(max_tokens=sum(per_image))).decide(scores, labels) is None
    assert VisionTokens(VisionTokens.Params(max_tokens=sum(per_image) - 1)).decide(scores, labels) == "too_many_tokens"
    assert VisionTokens(VisionTokens.Params(max_tokens=0)).decide({**scores, "vision_tokens": 1e9}, {}) is None


def test_filter_drops_a_document_the_processor_would_refuse() -> None:
    doc = document([slot(0, 1024, 768), slot(1, 1, 1000)])
    scores, _ = VisionTokens().score(doc)
    assert scores["refused_images"] == 1.0
    assert scores["vision_tokens"] == image_tokens(768, 1024, VisionTokenParams())
    assert VisionTokens().decide(scores, {}) == "image_refused"
    assert VisionTokens(VisionTokens.Params(drop_refused=False)).decide(scores, {}) is None
    # once the sliver is dropped by an image filter, the document is fine
    doc = document([slot(0, 1024, 768), slot(1, 1, 1000, Fate(Status.DROPPED, "aspect_ratio"))])
    assert VisionTokens().decide(VisionTokens().score(doc)[0], {}) is None


def test_filter_uses_the_size_the_shard_will_hold() -> None:
    """With output_max_side the estimate is for the encoded image; an encoded slot uses out_width/height."""
    f = VisionTokens(VisionTokens.Params(output_max_side=512))
    _, out_w, out_h = encode(Image.new("RGB", (4000, 3000)), EncodeParams(max_side=512))
    proc = transformers.Glm4vImageProcessor(size=GLM45V)
    t, gh, gw = hf_grid(proc, out_w, out_h)
    scores, _ = f.score(document([slot(0, 4000, 3000)]))
    assert scores["vision_tokens"] == t * gh * gw // 4
    encoded = slot(0, 4000, 3000, out_width=out_w, out_height=out_h)
    assert VisionTokens().score(document([encoded]))[0]["vision_tokens"] == t * gh * gw // 4


def test_filter_with_no_slots_and_its_registration() -> None:
    assert VisionTokens().score(document([]))[0] == {
        "vision_tokens": 0.0,
        "max_image_tokens": 0.0,
        "refused_images": 0.0,
    }
    registry = load_filters()
    assert registry["vision_tokens"] is VisionTokens
    assert VisionTokens.kinds == ("document",)
    for code in VisionTokens.reasons:
        assert reason(code).status == Status.DROPPED and reason(code).redecide
    # flat YAML-style parameters, as a config's `filters:` block gives them
    q = VisionTokens.Params(**{"policy": "qwen2_vl", "min_pixels": 3136, "max_pixels": 1003520, "max_tokens": 8192})
    assert image_grid(3000, 4000, q) == hf_grid(cached_processor("qwen2_vl-default", "torchvision"), 4000, 3000)
