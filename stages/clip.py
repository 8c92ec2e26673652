"""CLIP image-text similarity and the LAION aesthetic score, as a Beam `ModelHandler`.

One handler serves one CLIP *tower* (model + weights) and every head on it: the image is encoded
once, then the cosine similarity with the caption (`clip_score`) and the aesthetic MLP on the
normalised image embedding (`aesthetic`) are read off the same embedding. Weights resolve from an
open_clip pretrained tag (hub cache), a local checkpoint file, `local-dir:`/`hf-hub:` model names,
or a custom architecture JSON; missing weights are found before the pipeline starts
(`check_weights`), never replaced by a fallback or a fake score.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apache_beam.ml.inference.base import ModelHandler

from .base import Filter, ModelUnavailable, Params, register, require_hub, resolve_device


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


def check_weights(params: ClipParams, key: str = "models.clip") -> None:
    """Fail before the run when the tower's weights cannot be had; say which file and which key."""
    import open_clip

    if params.architecture:
        if not Path(params.architecture).is_file():
            raise ModelUnavailable(f"{key}.architecture: {params.architecture} does not exist")
        open_clip.add_model_config(params.architecture)
    if _check_named_model(params, key):
        return
    if params.model not in open_clip.list_models():
        raise ModelUnavailable(
            f"{key}.model: unknown architecture {params.model!r}; set {key}.architecture to its JSON, "
            "or use local-dir:/hf-hub: names"
        )
    if params.pretrained is None:
        raise ModelUnavailable(f"{key}.pretrained is null: random weights would give meaningless scores")
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
        open_clip.add_model_config(params.architecture)
    cfg = open_clip.get_model_config(params.model)
    return cfg.get("embed_dim") if cfg else None


def _natural(key: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def _state_dict(path: str, key: str) -> dict[str, Any]:
    import torch

    if not Path(path).is_file():
        raise ModelUnavailable(f"{key}: {path} does not exist")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelUnavailable(f"{key}: {path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    return state["state_dict"] if isinstance(state, dict) and "state_dict" in state else state


def _linear(state: dict[str, Any], weight: str) -> Any:
    import torch

    out_f, in_f = state[weight].shape
    bias = weight[: -len("weight")] + "bias"
    lin = torch.nn.Linear(in_f, out_f, bias=bias in state)
    lin.weight.data.copy_(state[weight])
    if lin.bias is not None:
        lin.bias.data.copy_(state[bias])
    return lin


def load_head(path: str, key: str = "models.aesthetic.weights") -> Any:
    """The aesthetic predictor as a chain of linear layers (its published MLPs have no activations)."""
    import torch

    state = _state_dict(path, key)
    weights = sorted((k for k, v in state.items() if k.endswith("weight") and v.ndim == 2), key=_natural)
    if not weights:
        raise ModelUnavailable(f"{key}: {path} holds no linear layers")
    layers = [_linear(state, w) for w in weights]
    for a, b in itertools.pairwise(layers):
        if a.out_features != b.in_features:
            raise ModelUnavailable(f"{key}: {path}: layer shapes do not chain ({a} -> {b})")
    if layers[-1].out_features != 1:
        raise ModelUnavailable(f"{key}: {path}: the head must output one score, not {layers[-1].out_features}")
    return torch.nn.Sequential(*layers).eval()


def head_input_dim(path: str) -> int:
    return int(load_head(path)[0].in_features)


@functools.lru_cache(maxsize=1)
def _pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="clip-pre")


@dataclass
class Tower:
    model: Any
    preprocess: Any
    tokenizer: Any
    head: Any
    device: Any
    autocast: Any


class ClipModelHandler(ModelHandler):
    """Examples: (RGB PIL image, caption). Predictions: {"clip_score": cos, "aesthetic": score}."""

    def __init__(self, params: ClipParams, text: bool = True, aesthetic_weights: str | None = None) -> None:
        super().__init__(min_batch_size=params.min_batch_size or params.batch_size, max_batch_size=params.batch_size)
        self.params, self.text, self.aesthetic_weights = params, text, aesthetic_weights

    def load_model(self) -> Tower:
        import open_clip
        import torch

        p = self.params
        device = resolve_device(p.device, "models.clip.device")
        if p.architecture:
            open_clip.add_model_config(p.architecture)
        pretrained = None if p.model.startswith(("local-dir:", "hf-hub:")) else p.pretrained
        model, _, preprocess = open_clip.create_model_and_transforms(
            p.model, pretrained=pretrained, device=device, cache_dir=p.cache_dir
        )
        model.eval()
        tokenizer = open_clip.get_tokenizer(p.model, cache_dir=p.cache_dir) if self.text else None
        head = load_head(self.aesthetic_weights).to(device) if self.aesthetic_weights else None
        precision = p.precision if p.precision != "auto" else ("bf16" if device.startswith("cuda") else "fp32")
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        autocast = (device.split(":")[0], dtype) if dtype is not None else None
        return Tower(model, preprocess, tokenizer, head, device, autocast)

    def run_inference(
        self, batch: Sequence[tuple[Any, str]], model: Tower, inference_args: dict[str, Any] | None = None
    ) -> list[dict[str, float]]:
        import contextlib

        import torch
        import torch.nn.functional as F

        # Per-image CPU transforms (resize, crop, normalise) in threads: Pillow and torch release the
        # GIL, and done serially they cap a worker at ~200 images/s whatever the accelerator.
        tensors = (
            list(_pool().map(model.preprocess, [img for img, _ in batch]))
            if len(batch) > 1
            else [model.preprocess(batch[0][0])]
        )
        images = torch.stack(tensors).to(model.device, non_blocking=True)
        ctx = torch.autocast(model.autocast[0], dtype=model.autocast[1]) if model.autocast else contextlib.nullcontext()
        out: list[dict[str, float]] = [{} for _ in batch]
        with torch.inference_mode(), ctx:
            img = F.normalize(model.model.encode_image(images).float(), dim=-1)
            if model.tokenizer is not None:
                tokens = model.tokenizer([caption for _, caption in batch]).to(model.device)
                txt = F.normalize(model.model.encode_text(tokens).float(), dim=-1)
                for o, s in zip(out, (img * txt).sum(-1).tolist(), strict=True):
                    o["clip_score"] = float(s)
            if model.head is not None:
                for o, s in zip(out, model.head(img).float().squeeze(-1).tolist(), strict=True):
                    o["aesthetic"] = float(s)
        return out

    def get_metrics_namespace(self) -> str:
        return "mmcurate_clip"

    def get_num_bytes(self, batch: Sequence[tuple[Any, str]]) -> int:
        return sum(img.width * img.height * 3 + len(c) for img, c in batch)


class QuantileFilter(Filter):
    """A threshold on one model score: an absolute `min`, or the `top_fraction` of the run.

    The fraction is taken over the whole run (Beam's approximate quantiles), per input group when
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

    kinds = ("caption", "clip")
    name = "aesthetic"
    score_name = "aesthetic"
    scores = ("aesthetic",)
    reason = "aesthetic_low"
    reasons = ("aesthetic_low",)
    model = "aesthetic"
