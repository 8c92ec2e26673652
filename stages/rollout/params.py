"""Rollout parameters: how a question is sampled and worded, and each backend's settings."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from mmcurate.stages.base import Params

GLM_BOX_INSTRUCTION = "Put your final answer between <|begin_of_box|> and <|end_of_box|>."


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


def sampling_of(default: SamplingParams, inference_args: dict[str, Any] | None) -> SamplingParams:
    """The sampling of one RunInference call: `inference_args["sampling"]` when given, else `default`."""
    raw = (inference_args or {}).get("sampling")
    if raw is None:
        return default
    return raw if isinstance(raw, SamplingParams) else SamplingParams(**raw)


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


OPENAI_REQUEST_FIELDS = ("model", "messages", "n", "temperature", "top_p", "max_tokens", "seed")
"""Request fields the OpenAI backend sets itself (from `model` and the sampling); `extra_body` may not."""


class OpenAIParams(Params):
    """Settings of the OpenAI-compatible backend, mapped onto the official `openai` client.

    Retries and their backoff are the client's own: `backoff` and `backoff_max` are gone (the client
    waits 0.5 s, doubling up to 8 s, with jitter, or what the server's Retry-After asks within its
    limit), so a config that still sets them is refused as an unknown key.
    """

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = ""
    """The model name the endpoint serves (listed by GET /models); required."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the key; unset or empty = no Authorization header."""
    timeout: float = 600.0
    """Seconds to wait for an answer (the client's read, write and pool timeout); an answer comes whole,
    so this bounds the generation of k samples of max_tokens each."""
    connect_timeout: float = 10.0
    """Seconds to open a connection."""
    max_concurrency: int = 8
    """Requests in flight per batch (one request per prompt)."""
    retries: int = 5
    """The client's `max_retries`: retries per request on 408, 409, 429, 5xx, timeouts and connection errors."""
    batch_size: int = 16
    min_batch_size: int | None = None
    extra_body: dict[str, Any] = {}
    """Extra request fields, e.g. {"chat_template_kwargs": {...}} or {"top_k": 20} for vLLM; not the
    fields the backend sets itself (`OPENAI_REQUEST_FIELDS`)."""

    def model_post_init(self, _context: object) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"rollout.openai.base_url must be an http(s) URL, got {self.base_url!r}")
        if self.max_concurrency < 1 or self.retries < 0 or self.timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("rollout.openai: need max_concurrency >= 1, retries >= 0 and positive timeouts")
        taken = sorted(set(self.extra_body) & set(OPENAI_REQUEST_FIELDS))
        if taken:  # the client's extra_body would override them; set them in rollout.openai.model / sampling
            raise ValueError(f"rollout.openai.extra_body must not set {taken}: rollout.openai.model and sampling do")
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
