"""The transformers backend: a local or hub model through `transformers.generate`.

Sampling is done by our own logits processor with one seeded generator per (prompt, sample), so each
prompt's k samples depend on the seed and the prompt only, not on which prompts share its batch.
Vision-language models get their images decoded from the messages' data URLs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmcurate.stages.base import ModelUnavailable, require_hub, resolve_device
from mmcurate.stages.io.weights import WeightsUnavailable, is_remote, local_copy, stat

from .handler import RolloutHandler
from .params import SamplingParams, TransformersParams, sampling_of
from .prompts import Messages, prompt_hash

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _is_local(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or Path(model).expanduser().exists()


def _check_remote(model: str, key: str) -> None:
    try:
        if stat(model).get("type") != "directory":
            raise ModelUnavailable(f"{key}: {model} is not a folder (written by save_pretrained)")
        stat(model.rstrip("/") + "/config.json")
    except WeightsUnavailable as exc:
        raise ModelUnavailable(f"{key}: {exc}") from None


def check_model(params: TransformersParams, key: str = "rollout.transformers.model") -> None:
    """Fail before the run when the model cannot be loaded: missing folder, config or weights, or a
    hub name that is neither cached nor downloadable."""
    if not params.model:
        raise ModelUnavailable(f"{key} is not set: a folder written by save_pretrained, or a hub name")
    if is_remote(params.model):  # a save_pretrained folder in a bucket: each worker copies it once
        _check_remote(params.model, key)
        return
    if _is_local(params.model):
        folder = Path(params.model).expanduser()
        if not folder.is_dir():
            raise ModelUnavailable(f"{key}: {folder} does not exist")
        if not (folder / "config.json").is_file():
            raise ModelUnavailable(f"{key}: {folder} holds no config.json (write it with save_pretrained)")
        if not any((folder / name).is_file() for name in _WEIGHT_FILES):
            raise ModelUnavailable(f"{key}: {folder} holds no weights ({', '.join(_WEIGHT_FILES)})")
        try:
            json.loads((folder / "config.json").read_text())
        except ValueError as exc:
            raise ModelUnavailable(f"{key}: {folder}/config.json is not JSON ({exc})") from exc
        return
    import huggingface_hub as hf

    cached = [hf.try_to_load_from_cache(params.model, name, cache_dir=params.cache_dir) for name in _WEIGHT_FILES]
    config = hf.try_to_load_from_cache(params.model, "config.json", cache_dir=params.cache_dir)
    if isinstance(config, str) and any(isinstance(c, str) for c in cached):  # else None or a "known missing" marker
        return
    what = f"{params.model!r} is not a local folder and"
    require_hub(params.model, "config.json", params.cache_dir, key, what, "a folder written by save_pretrained")


def _device(device: str) -> str:
    return resolve_device(device, "rollout.transformers.device")


def _row_seed(seed: int | None, phash: str, index: int) -> int:
    """The seed of sample `index` of a prompt: from the run seed and the prompt, never the batch."""
    if seed is None:
        return secrets.randbits(63)
    return int(hashlib.sha256(f"{seed}:{phash}:{index}".encode()).hexdigest()[:16], 16) & (2**63 - 1)


class _SeededSampler:
    """A logits processor that samples itself, one CPU generator per row, and returns a one-hot mask.

    `generate` runs in greedy mode and its argmax picks the sampled token, so a row's samples depend
    only on its own seed and logits (not on other rows, nor on the device's RNG). Inverse-CDF over
    the probabilities sorted in descending order, with nucleus (top_p) truncation.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float) -> None:
        import torch

        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        scores = scores.float()
        if self.temperature == 0:
            chosen = scores.argmax(dim=-1)
        else:
            probs = torch.softmax(scores / self.temperature, dim=-1)
            sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
            cdf = sorted_probs.cumsum(dim=-1)
            if self.top_p < 1.0:
                keep = (cdf - sorted_probs) < self.top_p  # the smallest prefix whose mass reaches top_p
                sorted_probs = sorted_probs * keep
                cdf = sorted_probs.cumsum(dim=-1)
            u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators])
            target = (u.to(cdf.device) * cdf[:, -1].double()).unsqueeze(-1).to(cdf.dtype)
            pos = torch.searchsorted(cdf, target, right=True).clamp_(max=cdf.shape[-1] - 1)
            # never land on a zero-probability tail token (rounding at the top of the cdf)
            pos = torch.minimum(pos, (sorted_probs > 0).sum(dim=-1, keepdim=True) - 1)
            chosen = order.gather(-1, pos).squeeze(-1)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, chosen.unsqueeze(-1), 0.0)
        return out


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    processor: Any
    """The multimodal processor (image-text-to-text models); None for text-only models."""
    device: str
    eos_ids: list[int]
    pad_id: int


def _is_vlm(config: Any) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return getattr(config, "model_type", "") in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def _decode_image(url: str) -> Any:
    import io

    from PIL import Image

    if not url.startswith("data:"):
        raise ValueError(f"only data: URLs are read here (build_messages inlines images), got {url[:40]!r}")
    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    img.load()
    return img.convert("RGB")


def _text_only(messages: Messages) -> Messages:
    """Messages with string contents (text templates rarely understand content parts)."""
    out = []
    for m in messages:
        content = m["content"]
        if not isinstance(content, str):
            if any(p.get("type") != "text" for p in content):
                raise ValueError("a text-only model got image/video parts: set rollout.prompt.image_placeholder for it")
            content = "\n".join(p["text"] for p in content)
        out.append({"role": m["role"], "content": content})
    return out


def _vlm_messages(messages: Messages) -> tuple[Messages, list[Any]]:
    """Messages in the processor's format ({"type": "image"} parts) and the decoded images, in order."""
    images, out = [], []
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            out.append({"role": m["role"], "content": [{"type": "text", "text": content}]})
            continue
        parts = []
        for p in content:
            if p["type"] == "text":
                parts.append({"type": "text", "text": p["text"]})
            elif p["type"] == "image_url":
                images.append(_decode_image(p["image_url"]["url"]))
                parts.append({"type": "image"})
            else:
                raise ValueError(f"the transformers backend does not take {p['type']} parts (use vLLM for video)")
        out.append({"role": m["role"], "content": parts})
    return out, images


class TransformersRolloutHandler(RolloutHandler):
    """Examples: chat message lists. Predictions: k response strings per example.

    Prompts of a batch are generated together (left padding), each repeated k times; the k rows of
    a prompt are seeded from (seed, prompt_hash, sample index), so a fixed seed reproduces the same
    samples in any batch.
    """

    def __init__(self, params: TransformersParams, sampling: SamplingParams | None = None) -> None:
        super().__init__(min_batch_size=params.min_batch_size or params.batch_size, max_batch_size=params.batch_size)
        self.params = params
        self.sampling = sampling or SamplingParams()

    def load_model(self) -> LoadedModel:
        import torch
        import transformers

        p = self.params
        check_model(p)
        device = _device(p.device)
        dtype_name = p.dtype if p.dtype != "auto" else ("bf16" if device.startswith("cuda") else "fp32")
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
        kw: dict[str, Any] = {"cache_dir": p.cache_dir, "trust_remote_code": p.trust_remote_code}
        source = local_copy(p.model) if is_remote(p.model) else p.model
        config = transformers.AutoConfig.from_pretrained(source, **kw)
        processor = None
        if _is_vlm(config):
            processor = transformers.AutoProcessor.from_pretrained(source, **kw)
            tokenizer = processor.tokenizer
            model = transformers.AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, **kw)
        else:
            tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kw)
            model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kw)
        model.to(device).eval()
        tokenizer.padding_side = "left"
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        eos_ids = [e for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
        if not eos_ids:
            raise ModelUnavailable(f"rollout.transformers.model: {p.model} defines no eos token")
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = model.generation_config.pad_token_id
        if pad is None:
            pad = eos_ids[0]
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token_id = pad
        return LoadedModel(model, tokenizer, processor, device, eos_ids, pad)

    def _encode(self, batch: Sequence[Messages], model: LoadedModel, k: int) -> Any:
        """Token (and pixel) inputs with each prompt repeated k times, left-padded."""
        if model.processor is None:
            texts = [
                model.tokenizer.apply_chat_template(_text_only(m), add_generation_prompt=True, tokenize=False)
                for m in batch
            ]
            texts = [t for t in texts for _ in range(k)]
            return model.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
        converted = [_vlm_messages(m) for m in batch]
        texts = [
            model.processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m, _ in converted
        ]
        # the processor lays out per-image tensors itself (models flatten patches differently), so
        # the prompts are repeated before processing rather than the tensors after
        texts = [t for t in texts for _ in range(k)]
        images = [img for _, imgs in converted for _ in range(k) for img in imgs]
        model.processor.tokenizer.padding_side = "left"
        return model.processor(text=texts, images=images or None, padding=True, return_tensors="pt")

    def run_inference(
        self, batch: Sequence[Messages], model: LoadedModel, inference_args: dict[str, Any] | None = None
    ) -> list[list[str]]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        s = sampling_of(self.sampling, inference_args)
        k = s.k
        enc = self._encode(batch, model, k)
        inputs = {name: v.to(model.device) if hasattr(v, "to") else v for name, v in enc.items()}
        seeds = [_row_seed(s.seed, prompt_hash(m), i) for m in batch for i in range(k)]
        config = GenerationConfig(
            max_new_tokens=s.max_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=model.eos_ids,
            pad_token_id=model.pad_id,
            bos_token_id=model.model.generation_config.bos_token_id,
        )
        sampler = _SeededSampler(seeds, s.temperature, s.top_p)
        with torch.inference_mode():
            out = model.model.generate(
                **inputs, generation_config=config, logits_processor=LogitsProcessorList([sampler])
            )
        new = out[:, inputs["input_ids"].shape[1] :].tolist()
        texts = []
        for row in new:
            for j, tok in enumerate(row):
                if tok in model.eos_ids:
                    row = row[:j]
                    break
            texts.append(model.tokenizer.decode(row, skip_special_tokens=self.params.skip_special_tokens))
        return [texts[i * k : (i + 1) * k] for i in range(len(batch))]
