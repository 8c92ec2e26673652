"""Rollouts: k sampled answers of a model to one question, through Beam's RunInference.

A question becomes OpenAI-style chat messages (`build_messages`): one user turn whose content is a
list of parts, images first as base64 data URLs, then the question, its lettered choices and the
model's answer instruction (GLM's answer box by default). `prompt_hash` names the rendered prompt
(image bytes included) and `SamplingParams.digest` the sampling, which together key the rollout
cache (`schemas.question.Rollout`).

Three `ModelHandler`s share one contract (examples: message lists; predictions: a list of k response
strings per example; sampling from the constructor or from `inference_args={"sampling": {...}}`):

* `TransformersRolloutHandler`: a local or hub model through `transformers.generate`. Sampling is
  done by our own logits processor with one seeded generator per (prompt, sample), so each prompt's
  k samples depend on the seed and the prompt only, not on which prompts share its batch.
* `OpenAIRolloutHandler`: any OpenAI-compatible `/chat/completions` endpoint (vLLM, SGLang, a hosted
  API), `n=k` per request, a thread pool over the batch, retries with backoff per request.
* `VLLMRolloutHandler`: Beam's own `VLLMChatModelHandler` (a vLLM server per worker) on GPU hosts.

Models and endpoints are checked before the pipeline starts (`check_model`, `check_endpoint`,
`check_vllm`), never replaced by a fallback.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apache_beam.ml.inference.base import ModelHandler

from mmcurate.schemas.question import Question
from mmcurate.schemas.redact import install_log_redaction, redact_text

from .base import ModelUnavailable, Params, hub_answer, resolve_device

log = logging.getLogger(__name__)

Messages = list[dict[str, Any]]

METRICS_NAMESPACE = "mmcurate_rollout"
GLM_BOX_INSTRUCTION = "Put your final answer between <|begin_of_box|> and <|end_of_box|>."
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ----------------------------------------------------------------------------------------------
# Parameters


class SamplingParams(Params):
    """How each question is sampled; its `digest` keys the rollout cache."""

    k: int = 8
    """Samples per prompt (pass rate = correct / k)."""
    temperature: float = 1.0
    """0 = greedy (all k samples then agree)."""
    top_p: float = 1.0
    max_tokens: int = 1024
    """New tokens per sample."""
    thinking: bool = True
    """False appends the model's no-thinking marker (`PromptParams.nothink_suffix`) to the user turn."""
    seed: int | None = 0
    """Fixed seed = reproducible samples (backends that honour it); null = fresh randomness each run."""

    def model_post_init(self, _context: object) -> None:
        if self.k < 1:
            raise ValueError(f"rollout.sampling.k must be >= 1, got {self.k}")
        if self.temperature < 0:
            raise ValueError(f"rollout.sampling.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"rollout.sampling.top_p must be within (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"rollout.sampling.max_tokens must be >= 1, got {self.max_tokens}")

    def digest(self) -> str:
        """sha256 hex of the parameters as sorted JSON: stable across runs, processes and machines."""
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()


class PromptParams(Params):
    """How a question is worded for one model (its conventions differ: set these per model)."""

    system: str | None = None
    """A system turn, if the model wants one."""
    answer_instruction: str = GLM_BOX_INSTRUCTION
    """Appended after the question and its choices; '' for none."""
    nothink_suffix: str = "/nothink"
    """Appended to the user turn when sampling.thinking is false (GLM-4.5V: '/nothink'; Qwen3: ' /no_think')."""
    image_placeholder: str | None = None
    """For text-only models: each image (and video) becomes this text instead of a media part."""


class TransformersParams(Params):
    model: str = ""
    """A local folder written by save_pretrained, or a hub name (resolved from the HF cache); required."""
    cache_dir: str | None = None
    """Hugging Face cache root for hub names; null = the HF default (HF_HUB_CACHE)."""
    device: str = "auto"
    """auto (CUDA when visible, else CPU), cpu, cuda, cuda:N."""
    dtype: str = "auto"
    """auto (bf16 on CUDA, fp32 on CPU), fp32, fp16, bf16."""
    batch_size: int = 4
    """Prompts per generate call (each expands to k rows)."""
    min_batch_size: int | None = None
    """Smallest batch BatchElements may form; null = 1."""
    skip_special_tokens: bool = False
    """False keeps tokens such as <|begin_of_box|> and <think> that verifiers look for."""
    trust_remote_code: bool = False

    def model_post_init(self, _context: object) -> None:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"rollout.transformers.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.dtype not in ("auto", "fp32", "fp16", "bf16"):
            raise ValueError(f"rollout.transformers.dtype must be auto, fp32, fp16 or bf16, got {self.dtype!r}")
        _check_batch("rollout.transformers", self.batch_size, self.min_batch_size)


class OpenAIParams(Params):
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = ""
    """The model name the endpoint serves (listed by GET /models); required."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the key; unset or empty = no Authorization header."""
    timeout: float = 600.0
    """Seconds per request (k samples of max_tokens each)."""
    connect_timeout: float = 10.0
    max_concurrency: int = 8
    """Requests in flight per batch (one request per prompt)."""
    retries: int = 5
    """Retries per request on 429, 5xx, timeouts and connection errors."""
    backoff: float = 1.0
    """First retry delay in seconds, doubled each retry (a Retry-After header wins, up to backoff_max)."""
    backoff_max: float = 60.0
    batch_size: int = 16
    min_batch_size: int | None = None
    extra_body: dict[str, Any] = {}
    """Extra request fields, e.g. {"chat_template_kwargs": {...}} or {"top_k": 20} for vLLM."""

    def model_post_init(self, _context: object) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"rollout.openai.base_url must be an http(s) URL, got {self.base_url!r}")
        if self.max_concurrency < 1 or self.retries < 0 or self.timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("rollout.openai: need max_concurrency >= 1, retries >= 0 and positive timeouts")
        _check_batch("rollout.openai", self.batch_size, self.min_batch_size)


class VLLMParams(Params):
    model: str = ""
    """Hub name or local folder vLLM serves; required."""
    chat_template: str | None = None
    """Path (any Beam filesystem) of a chat template overriding the model's."""
    server_kwargs: dict[str, str | None] = {}
    """Extra `vllm serve` flags without the dashes, e.g. {"max-model-len": "16384", "limit-mm-per-prompt": ...}."""
    batch_size: int = 64
    """Prompts per batch; Beam's handler sends them all at once (vLLM batches them on the GPU)."""
    min_batch_size: int | None = None

    def model_post_init(self, _context: object) -> None:
        _check_batch("rollout.vllm", self.batch_size, self.min_batch_size)


def _check_batch(key: str, batch_size: int, min_batch_size: int | None) -> None:
    if batch_size < 1 or not 1 <= (min_batch_size or 1) <= batch_size:
        raise ValueError(f"{key}: need 1 <= min_batch_size <= batch_size")


# ----------------------------------------------------------------------------------------------
# Prompts


def _mime(data: bytes, uri: str) -> str:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data.startswith(b"BM"):
        return "image/bmp"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    ext = uri.rsplit(".", 1)[-1].lower()
    return {"mp4": "video/mp4", "webm": "video/webm", "mov": "video/quicktime"}.get(ext, "image/jpeg")


def _data_url(uri: str) -> str:
    import fsspec

    with fsspec.open(uri, "rb") as f:
        data = f.read()
    return f"data:{_mime(data, uri)};base64,{base64.b64encode(data).decode('ascii')}"


def question_text(q: Question, prompt: PromptParams, sampling: SamplingParams) -> str:
    """The text of the user turn: question, 'A. choice' lines, the answer instruction, no-think marker."""
    lines = [q.question.strip()]
    if len(q.choices) > len(_LETTERS):
        raise ValueError(f"question {q.id}: {len(q.choices)} choices, at most {len(_LETTERS)} can be lettered")
    lines += [f"{letter}. {choice.strip()}" for letter, choice in zip(_LETTERS, q.choices, strict=False)]
    if prompt.answer_instruction:
        lines.append(prompt.answer_instruction)
    text = "\n".join(lines)
    if not sampling.thinking:
        text += prompt.nothink_suffix
    return text


def build_messages(q: Question, prompt: PromptParams, sampling: SamplingParams, blind: bool = False) -> Messages:
    """OpenAI chat messages for one question; `blind` asks the same question without its images/video.

    Media are read (fsspec) and inlined as base64 data URLs, so the messages are self-contained for
    any backend, and `prompt_hash` changes when an image's bytes do.
    """
    parts: list[dict[str, Any]] = []
    if not blind:
        media = [("image", uri) for uri in q.images] + ([("video", q.video)] if q.video else [])
        for kind, uri in media:
            if prompt.image_placeholder is not None:
                parts.append({"type": "text", "text": prompt.image_placeholder})
            else:
                parts.append({"type": f"{kind}_url", f"{kind}_url": {"url": _data_url(uri)}})
    parts.append({"type": "text", "text": question_text(q, prompt, sampling)})
    messages: Messages = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system})
    messages.append({"role": "user", "content": parts})
    return messages


def prompt_hash(messages: Messages) -> str:
    """sha256 hex of the messages as canonical JSON (media bytes included)."""
    canonical = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _sampling_of(default: SamplingParams, inference_args: dict[str, Any] | None) -> SamplingParams:
    raw = (inference_args or {}).get("sampling")
    if raw is None:
        return default
    return raw if isinstance(raw, SamplingParams) else SamplingParams(**raw)


def _validate_args(inference_args: dict[str, Any] | None) -> None:
    extra = set(inference_args or {}) - {"sampling"}
    if extra:
        raise ValueError(f"rollout handlers take inference_args={{'sampling': {{...}}}} only, got {sorted(extra)}")
    _sampling_of(SamplingParams(), inference_args)


def _num_bytes(batch: Sequence[Messages]) -> int:
    return sum(len(json.dumps(m)) for m in batch)


# ----------------------------------------------------------------------------------------------
# transformers


_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _is_local(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or Path(model).expanduser().exists()


def check_model(params: TransformersParams, key: str = "rollout.transformers.model") -> None:
    """Fail before the run when the model cannot be loaded: missing folder, config or weights, or a
    hub name that is neither cached nor downloadable."""
    if not params.model:
        raise ModelUnavailable(f"{key} is not set: a folder written by save_pretrained, or a hub name")
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
    why = hub_answer(params.model, "config.json")
    if why is None:
        return
    cache = params.cache_dir or hf.constants.HF_HUB_CACHE
    raise ModelUnavailable(
        f"{key}: {params.model!r} is not a local folder, not in the cache {cache}, and {why}. "
        f"Download it on a connected machine (`hf download {params.model} --cache-dir {cache}`), "
        f"or point {key} at a folder written by save_pretrained"
    )


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


class _RolloutHandler(ModelHandler):
    """What every rollout backend shares: the inference-args contract, metrics namespace, byte count."""

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        _validate_args(inference_args)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def get_num_bytes(self, batch: Sequence[Messages]) -> int:
        return _num_bytes(batch)


class TransformersRolloutHandler(_RolloutHandler):
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
        config = transformers.AutoConfig.from_pretrained(p.model, **kw)
        processor = None
        if _is_vlm(config):
            processor = transformers.AutoProcessor.from_pretrained(p.model, **kw)
            tokenizer = processor.tokenizer
            model = transformers.AutoModelForImageTextToText.from_pretrained(p.model, dtype=dtype, **kw)
        else:
            tokenizer = transformers.AutoTokenizer.from_pretrained(p.model, **kw)
            model = transformers.AutoModelForCausalLM.from_pretrained(p.model, dtype=dtype, **kw)
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

        s = _sampling_of(self.sampling, inference_args)
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


# ----------------------------------------------------------------------------------------------
# OpenAI-compatible endpoints


class EndpointError(RuntimeError):
    """A request failed after its retries (or with an error that retrying cannot fix)."""


def _headers(params: OpenAIParams) -> dict[str, str]:
    key = os.environ.get(params.api_key_env, "") if params.api_key_env else ""
    return {"Authorization": f"Bearer {key}"} if key else {}


def _shown(params: OpenAIParams) -> str:
    """The endpoint as messages name it: credentials in the URL never reach a log or a ledger."""
    return redact_text(params.base_url)


def _url(params: OpenAIParams, path: str) -> str:
    return params.base_url.rstrip("/") + path


def check_endpoint(params: OpenAIParams, key: str = "rollout.openai") -> None:
    """GET /models must answer and list the model; say which setting to fix when it does not."""
    import requests

    if not params.model:
        raise ModelUnavailable(f"{key}.model is not set: the model name {_shown(params)} serves")
    try:
        r = requests.get(
            _url(params, "/models"),
            headers=_headers(params),
            timeout=(params.connect_timeout, min(params.timeout, 30.0)),
        )
    except requests.RequestException as exc:
        raise ModelUnavailable(
            f"{key}.base_url: {_shown(params)} does not answer GET /models ({type(exc).__name__}: {exc})"
        ) from exc
    if r.status_code in (401, 403):
        raise ModelUnavailable(
            f"{key}.api_key_env: {_shown(params)} refused the key from ${params.api_key_env} (HTTP {r.status_code})"
        )
    if r.status_code != 200:
        raise ModelUnavailable(f"{key}.base_url: GET {_shown(params)}/models answered HTTP {r.status_code}")
    try:
        served = [m["id"] for m in r.json()["data"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelUnavailable(f"{key}.base_url: {_shown(params)}/models is not an OpenAI model list") from exc
    if params.model not in served:
        raise ModelUnavailable(f"{key}.model: {_shown(params)} does not serve {params.model!r}; it serves {served}")


def _choice_text(choice: dict[str, Any]) -> str:
    """The raw answer: a reasoning field split off by the server goes back in front as <think>...</think>."""
    message = choice.get("message") or {}
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
    return f"<think>{reasoning}</think>{content}" if reasoning else content


class _Client:
    """A requests session per thread (sessions are not thread-safe)."""

    def __init__(self, params: OpenAIParams) -> None:
        self.params = params
        self.local = threading.local()
        self.pool = concurrent.futures.ThreadPoolExecutor(params.max_concurrency, thread_name_prefix="rollout")

    def session(self) -> Any:
        import requests

        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        return self.local.session

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """One request, retried with exponential backoff on 429/5xx/timeouts/connection errors."""
        import requests

        p = self.params
        delay = p.backoff
        for attempt in range(p.retries + 1):
            retry_after = None
            try:
                r = self.session().post(
                    _url(p, "/chat/completions"),
                    json=body,
                    headers=_headers(p),
                    timeout=(p.connect_timeout, p.timeout),
                )
                if r.status_code == 200:
                    return r.json()
                problem = f"HTTP {r.status_code}: {r.text[:300]}"
                if r.status_code != 429 and r.status_code < 500:
                    raise EndpointError(f"POST {_shown(p)}/chat/completions: {problem}")
                retry_after = _retry_after(r.headers.get("Retry-After"))
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt == p.retries:
                raise EndpointError(f"POST {_shown(p)}/chat/completions failed {attempt + 1} times; last: {problem}")
            wait = min(p.backoff_max, retry_after if retry_after is not None else delay)
            log.warning("rollout request failed (%s); retry %d/%d in %.2fs", problem, attempt + 1, p.retries, wait)
            time.sleep(wait)
            delay *= 2
        raise AssertionError("unreachable")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class OpenAIRolloutHandler(_RolloutHandler):
    """Examples: chat message lists. Predictions: k response strings per example (`n=k` per request).

    When a server returns fewer than n choices (some APIs ignore n), the rest are asked for again,
    with the seed shifted by the number already received, at most k requests per prompt.
    """

    def __init__(self, params: OpenAIParams, sampling: SamplingParams | None = None) -> None:
        super().__init__(min_batch_size=params.min_batch_size or params.batch_size, max_batch_size=params.batch_size)
        self.params = params
        self.sampling = sampling or SamplingParams()

    def load_model(self) -> _Client:
        install_log_redaction()  # this worker's retry warnings name the endpoint
        return _Client(self.params)

    def _one(self, client: _Client, messages: Messages, s: SamplingParams) -> list[str]:
        texts: list[str] = []
        for _ in range(s.k):
            body = {
                **self.params.extra_body,
                "model": self.params.model,
                "messages": messages,
                "n": s.k - len(texts),
                "temperature": s.temperature,
                "top_p": s.top_p,
                "max_tokens": s.max_tokens,
            }
            if s.seed is not None:
                body["seed"] = s.seed + len(texts)
            choices = client.post(body).get("choices") or []
            texts += [_choice_text(c) for c in sorted(choices, key=lambda c: c.get("index", 0))]
            if len(texts) >= s.k:
                return texts[: s.k]
        raise EndpointError(f"{_shown(self.params)} returned {len(texts)} of {s.k} samples after {s.k} requests")

    def run_inference(
        self, batch: Sequence[Messages], model: _Client, inference_args: dict[str, Any] | None = None
    ) -> list[list[str]]:
        s = _sampling_of(self.sampling, inference_args)
        futures = [model.pool.submit(self._one, model, m, s) for m in batch]
        return [f.result() for f in futures]


# ----------------------------------------------------------------------------------------------
# vLLM (GPU hosts)


def check_vllm(params: VLLMParams | None = None, key: str = "rollout.vllm") -> None:
    """vLLM and the openai client must be importable where the workers run (a CUDA host)."""
    import importlib.util

    if params is not None and not params.model:
        raise ModelUnavailable(f"{key}.model is not set: the hub name or folder vLLM should serve")
    missing = [name for name in ("vllm", "openai") if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelUnavailable(
            f"vllm is not installed: {' and '.join(missing)} cannot be imported here. vLLM needs a CUDA GPU "
            "and its own environment (it pins its own torch and transformers); run on a GPU host, see docs/rl.md, "
            "or serve the model with `vllm serve` and use rollout.backend: openai"
        )


class VLLMRolloutHandler(_RolloutHandler):
    """Beam's `VLLMChatModelHandler` (one vLLM OpenAI server per worker machine, shared by its
    processes), with our message dicts in and k response strings out.

    Beam's handler is built on first use, so constructing and pickling this one needs neither vllm
    nor openai; `load_model` runs `check_vllm` on the worker, then Beam starts the server there.
    Sampling becomes the request's `n`, `temperature`, `top_p`, `max_tokens` and `seed` (vLLM seeds
    each request, so its samples are reproducible per prompt but differ from the transformers
    backend's).
    """

    def __init__(self, params: VLLMParams, sampling: SamplingParams | None = None) -> None:
        super().__init__(min_batch_size=params.min_batch_size or params.batch_size, max_batch_size=params.batch_size)
        self.params = params
        self.sampling = sampling or SamplingParams()
        self._beam: Any = None

    def _handler(self) -> Any:
        if self._beam is None:
            import importlib.util

            if importlib.util.find_spec("openai") is None:  # Beam's vllm_inference imports it at the top
                check_vllm()
            from apache_beam.ml.inference.vllm_inference import VLLMChatModelHandler

            self._beam = VLLMChatModelHandler(
                self.params.model,
                chat_template_path=self.params.chat_template,
                vllm_server_kwargs=dict(self.params.server_kwargs),
            )
        return self._beam

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_beam"] = None
        return state

    def load_model(self) -> Any:
        check_vllm(self.params)
        return self._handler().load_model()

    def run_inference(
        self, batch: Sequence[Messages], model: Any, inference_args: dict[str, Any] | None = None
    ) -> list[list[str]]:
        from apache_beam.ml.inference.vllm_inference import OpenAIChatMessage

        s = _sampling_of(self.sampling, inference_args)
        args: dict[str, Any] = {"n": s.k, "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
        if s.seed is not None:
            args["seed"] = s.seed
        # Beam passes message.content through to the openai client as is, so content parts survive
        chats = [[OpenAIChatMessage(m["role"], m["content"]) for m in messages] for messages in batch]
        results = self._handler().run_inference(chats, model, args)
        out = []
        for result in results:
            choices = sorted(result.inference.choices, key=lambda c: c.index)
            out.append([_choice_text({"message": c.message.model_dump()}) for c in choices])
        return out

    def share_model_across_processes(self) -> bool:
        return True
