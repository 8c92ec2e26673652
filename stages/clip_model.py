"""The CLIP tower and the LAION aesthetic head as a Beam `ModelHandler` (imported only when a model
stage runs: it loads torch and open_clip).

One handler serves one tower and every head on it: the image is encoded once, then the cosine
similarity with the caption (`clip_score`) and the aesthetic MLP on the normalised image embedding
(`aesthetic`) are read off the same embedding.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apache_beam.ml.inference.base import ModelHandler

from .base import ModelUnavailable, resolve_device
from .clip import ClipParams, weights_file
from .io.weights import is_remote

TEXT_BATCH = 256
"""Sentences encoded per forward pass of the text tower (a document can hold hundreds)."""


def _natural(key: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def _state_dict(path: str, key: str) -> dict[str, Any]:
    import torch

    path = weights_file(path, key)
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


EMBEDDING = "image_embedding"
"""The prediction key of the L2-normalised image embedding (float32 array), with `embed=True`."""


class ClipModelHandler(ModelHandler):
    """Examples: (RGB PIL image, caption). Predictions: {"clip_score": cos, "aesthetic": score}, and
    with `embed` the normalised image embedding under `EMBEDDING` (clip dedup hashes it; off by
    default, so no other run carries it)."""

    def __init__(
        self, params: ClipParams, text: bool = True, aesthetic_weights: str | None = None, embed: bool = False
    ) -> None:
        super().__init__(min_batch_size=params.min_batch_size or params.batch_size, max_batch_size=params.batch_size)
        self.params, self.text, self.aesthetic_weights, self.embed = params, text, aesthetic_weights, embed

    def load_model(self) -> Tower:
        import open_clip
        import torch

        p = self.params
        device = resolve_device(p.device, "models.clip.device")
        if p.architecture:
            open_clip.add_model_config(weights_file(p.architecture, "models.clip.architecture"))
        pretrained = None if p.model.startswith(("local-dir:", "hf-hub:")) else p.pretrained
        if pretrained and is_remote(pretrained):
            pretrained = weights_file(pretrained, "models.clip.pretrained")
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
    ) -> list[dict[str, Any]]:
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
        out: list[dict[str, Any]] = [{} for _ in batch]
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
            if self.embed:
                for o, row in zip(out, img.cpu().numpy(), strict=True):
                    o[EMBEDDING] = row.copy()
        return out

    def get_metrics_namespace(self) -> str:
        return "mmcurate_clip"

    def get_num_bytes(self, batch: Sequence[tuple[Any, str]]) -> int:
        return sum(img.width * img.height * 3 + len(c) for img, c in batch)


class ClipMatrixHandler(ClipModelHandler):
    """Examples: (RGB PIL image, sentences). Predictions: the cosine of the image with each sentence.

    The interleaved corpus aligns every image of a document with every sentence of it: each image is
    encoded once, and each distinct sentence of the batch once (a document's sentences are shared by
    its images), instead of one (image, caption) pair per cell of the matrix."""

    def __init__(self, params: ClipParams) -> None:
        super().__init__(params, text=True)

    def run_inference(
        self, batch: Sequence[tuple[Any, Sequence[str]]], model: Tower, inference_args: dict[str, Any] | None = None
    ) -> list[list[float]]:
        import contextlib

        import torch
        import torch.nn.functional as F

        tensors = list(_pool().map(model.preprocess, [img for img, _ in batch]))
        images = torch.stack(tensors).to(model.device, non_blocking=True)
        sentences = list(dict.fromkeys(s for _, texts in batch for s in texts))
        column = {s: i for i, s in enumerate(sentences)}
        ctx = torch.autocast(model.autocast[0], dtype=model.autocast[1]) if model.autocast else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            img = F.normalize(model.model.encode_image(images).float(), dim=-1)
            if not sentences:
                return [[] for _ in batch]
            chunks = []
            for start in range(0, len(sentences), TEXT_BATCH):
                tokens = model.tokenizer(sentences[start : start + TEXT_BATCH]).to(model.device)
                chunks.append(F.normalize(model.model.encode_text(tokens).float(), dim=-1))
            sims = (img @ torch.cat(chunks).T).cpu().tolist()
        return [[sims[i][column[s]] for s in texts] for i, (_, texts) in enumerate(batch)]

    def get_metrics_namespace(self) -> str:
        return "mmcurate_clip_matrix"

    def get_num_bytes(self, batch: Sequence[tuple[Any, Sequence[str]]]) -> int:
        return sum(img.width * img.height * 3 + sum(len(s) for s in texts) for img, texts in batch)
