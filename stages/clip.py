"""CLIP image-text similarity and the LAION aesthetic score: parameters, weight checks and filters.

The handler that runs the model is in `clip_model.py`, imported only when a model stage runs (it
loads torch and open_clip; a run without model filters never does). Weights resolve from an
open_clip pretrained tag (hub cache), a local checkpoint file, `local-dir:`/`hf-hub:` model names,
or a custom architecture JSON; missing weights are found before the pipeline starts
(`check_weights`), never replaced by a fallback or a fake score.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from .base import Filter, ModelUnavailable, Params, register, require_hub
from .io.weights import WeightsUnavailable, is_remote, local_copy, stat


class ClipParams(Params):
    model: str = "ViT-B-32"
    """open_clip architecture name, `local-dir:/path` or `hf-hub:org/repo`."""
    pretrained: str | None = "laion2b_s34b_b79k"
    """open_clip pretrained tag (from the hub cache), a local checkpoint file, or null for local-dir/hf-hub."""
    architecture: str | None = None
    """JSON file of a custom architecture (its file name, without .json, is the `model` name)."""
    cache_dir: str | None = None
    """Hugging Face cache root holding hub weights; null = the HF default (HF_HUB_CACHE)."""
    device: str = "auto"
    """auto (CUDA when visible, else CPU), cpu, cuda, cuda:N."""
    precision: str = "auto"
    """auto (bf16 autocast on CUDA, fp32 on CPU), fp32, fp16, bf16."""
    batch_size: int = 32
    min_batch_size: int | None = None
    """Smallest batch BatchElements may form; null = batch_size (full batches keep a GPU busy)."""

    def model_post_init(self, _context: object) -> None:
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise ValueError(f"models.clip.precision must be auto, fp32, fp16 or bf16, got {self.precision!r}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"models.clip.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.batch_size < 1 or not 1 <= (self.min_batch_size or self.batch_size) <= self.batch_size:
            raise ValueError("models.clip: need 1 <= min_batch_size <= batch_size")

    @property
    def tower(self) -> tuple[str, str | None, str | None]:
        return (self.model, self.pretrained, self.architecture)


class AestheticParams(Params):
    weights: str | None = None
    """The LAION aesthetic predictor's state dict (.pth/.safetensors): the improved MLP on ViT-L/14
    (`sac+logos+ava1-l14-linearMSE.pth`) or the linear v1 head on ViT-B/32."""
    clip: ClipParams | None = None
    """The tower its embeddings come from; null = models.clip (the image is then encoded once)."""


def _is_path(value: str) -> bool:
    return "/" in value or value.endswith((".pt", ".pth", ".bin", ".safetensors"))


def _hub_files(repo: str) -> tuple[str, ...]:
    return ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _in_cache(repo: str, names: tuple[str, ...], params: ClipParams) -> bool:
    import huggingface_hub as hf

    return any(hf.try_to_load_from_cache(repo, f, cache_dir=params.cache_dir) for f in names)


def _check_named_model(params: ClipParams, key: str) -> bool:
    """`local-dir:` and `hf-hub:` models; True when the model was one of them (and is usable)."""
    if params.model.startswith("local-dir:"):
        folder = Path(params.model.removeprefix("local-dir:"))
        if not (folder / "open_clip_config.json").is_file():
            raise ModelUnavailable(f"{key}.model: {folder} holds no open_clip_config.json (local-dir: model)")
        return True
    if params.model.startswith("hf-hub:"):
        repo = params.model.removeprefix("hf-hub:")
        if not _in_cache(repo, _hub_files(repo), params):
            _unreachable(repo, _hub_files(repo)[0], params, key + ".model")
        return True
    return False


def _check_pretrained_tag(params: ClipParams, key: str) -> None:
    """An open_clip pretrained tag: its weights in the HF cache (or the hub answers), or its URL's file."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(params.model, params.pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(params.model)
        raise ModelUnavailable(f"{key}.pretrained: no tag {params.pretrained!r} for {params.model}; known: {tags}")
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        names = (filename,) if filename else _hub_files(repo)
        if not _in_cache(repo, names, params):
            _unreachable(repo, names[0], params, key + ".pretrained")
    elif cfg.get("url"):
        cached = Path(params.cache_dir or Path.home() / ".cache" / "clip") / os.path.basename(cfg["url"])
        if not cached.is_file():
            raise ModelUnavailable(f"{key}.pretrained: {cached} missing (download {cfg['url']} there)")


def weights_file(uri: str, key: str) -> str:
    """A local path of a weights file or folder named by a path or a URL (`s3://`, `gs://`: copied
    once into the machine's cache); ModelUnavailable naming the key when it cannot be had."""
    try:
        return local_copy(uri)
    except (WeightsUnavailable, OSError) as exc:
        raise ModelUnavailable(f"{key}: {exc}") from None


def check_weights(params: ClipParams, key: str = "models.clip") -> None:
    """Fail before the run when the tower's weights cannot be had; say which file and which key."""
    import open_clip

    if params.architecture:
        arch = weights_file(params.architecture, key + ".architecture")
        if not Path(arch).is_file():
            raise ModelUnavailable(f"{key}.architecture: {params.architecture} does not exist")
        open_clip.add_model_config(arch)
    if _check_named_model(params, key):
        return
    if params.model not in open_clip.list_models():
        raise ModelUnavailable(
            f"{key}.model: unknown architecture {params.model!r}; set {key}.architecture to its JSON, "
            "or use local-dir:/hf-hub: names"
        )
    if params.pretrained is None:
        raise ModelUnavailable(f"{key}.pretrained is null: random weights would give meaningless scores")
    if is_remote(params.pretrained):  # a bucket's checkpoint: there (each worker copies it once)
        try:
            stat(params.pretrained)
        except WeightsUnavailable as exc:
            raise ModelUnavailable(f"{key}.pretrained: {exc}") from None
        return
    if _is_path(params.pretrained):
        if not Path(params.pretrained).is_file():
            raise ModelUnavailable(f"{key}.pretrained: checkpoint {params.pretrained} does not exist")
        _readable(params.pretrained, key + ".pretrained")
        return
    _check_pretrained_tag(params, key)


def _readable(path: str, key: str) -> None:
    """Open the checkpoint's index (memory-mapped, no tensor is read) so a corrupt file fails now."""
    import torch

    try:
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                f.keys()
        else:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise ModelUnavailable(f"{key}: {path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from exc


def _unreachable(repo: str, filename: str, params: ClipParams, key: str) -> None:
    require_hub(repo, filename, params.cache_dir, key, f"weights {repo}/{filename} are", "a local checkpoint file")


def embed_dim(params: ClipParams) -> int | None:
    import open_clip

    if params.model.startswith("local-dir:"):
        cfg = json.loads((Path(params.model.removeprefix("local-dir:")) / "open_clip_config.json").read_text())
        return cfg.get("model_cfg", {}).get("embed_dim")
    if params.architecture:
        open_clip.add_model_config(weights_file(params.architecture, "architecture"))
    cfg = open_clip.get_model_config(params.model)
    return cfg.get("embed_dim") if cfg else None


def head_input_dim(path: str) -> int:
    from .clip_model import load_head

    return int(load_head(path)[0].in_features)


class QuantileFilter(Filter):
    """A threshold on one model score: an absolute `min`, or the `top_fraction` of the run.

    The fraction is taken over the whole run (a histogram of its scores), per input group when
    `per: input` (DataComp's "keep the top 30 %" per pool), and becomes an absolute cutoff that
    `decide_with` receives; `min` and `top_fraction` may be combined (both must pass).
    """

    score_name: str = ""
    reason: str = ""

    class Params(Params):
        min: float | None = None
        top_fraction: float | None = None
        per: str = "input"

        def model_post_init(self, _context: object) -> None:
            if self.top_fraction is not None and not 0 < self.top_fraction <= 1:
                raise ValueError(f"top_fraction must be within (0, 1], got {self.top_fraction}")
            if self.per not in ("input", "all"):
                raise ValueError(f"per must be 'input' or 'all', got {self.per!r}")

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        return self.decide_with(scores, labels, None)

    def decide_with(self, scores: dict[str, float], labels: dict[str, str], cutoff: float | None) -> str | None:
        value = scores.get(self.score_name)
        if value is None:
            return None
        if math.isnan(value):  # a score that came out undefined never passes a threshold
            return self.reason
        if self.params.min is not None and value < self.params.min:
            return self.reason
        if cutoff is not None and value < cutoff:
            return self.reason
        return None


@register
class ClipScore(QuantileFilter):
    """Image-caption agreement: cosine of CLIP embeddings (LAION-2B kept >= 0.28 with ViT-B/32)."""

    kinds = ("caption", "clip")
    name = "clip_score"
    score_name = "clip_score"
    scores = ("clip_score",)
    reason = "clip_score_low"
    reasons = ("clip_score_low",)
    model = "clip"


@register
class Aesthetic(QuantileFilter):
    """LAION aesthetic predictor score (about 1-10; Open-Sora keeps about 4.5-5 and up)."""

    kinds = ("caption", "clip", "image")
    name = "aesthetic"
    score_name = "aesthetic"
    scores = ("aesthetic",)
    reason = "aesthetic_low"
    reasons = ("aesthetic_low",)
    model = "aesthetic"
