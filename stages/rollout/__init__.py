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
  API) through the official `openai` client (its retries, backoff and timeouts), `n=k` per request,
  a thread pool over the batch.
* `VLLMRolloutHandler`: Beam's own `VLLMChatModelHandler` (a vLLM server per worker) on GPU hosts.

Models and endpoints are checked before the pipeline starts (`check_model`, `check_endpoint`,
`check_vllm`), never replaced by a fallback.

Modules: `params` (sampling, prompt and backend settings), `prompts` (messages and their hash),
`handler` (the shared `RolloutHandler` base), `transformers_backend`, `openai_backend`, `vllm_backend`.
Everything is importable from this package.
"""

from .handler import METRICS_NAMESPACE, RolloutHandler
from .openai_backend import EndpointError, OpenAIRolloutHandler, check_endpoint, choice_text
from .params import (
    GLM_BOX_INSTRUCTION,
    OpenAIParams,
    PromptParams,
    SamplingParams,
    TransformersParams,
    VLLMParams,
    sampling_of,
)
from .prompts import Messages, build_messages, prompt_hash, question_text
from .transformers_backend import LoadedModel, TransformersRolloutHandler, check_model
from .vllm_backend import VLLMRolloutHandler, check_vllm

__all__ = [
    "GLM_BOX_INSTRUCTION",
    "METRICS_NAMESPACE",
    "EndpointError",
    "LoadedModel",
    "Messages",
    "OpenAIParams",
    "OpenAIRolloutHandler",
    "PromptParams",
    "RolloutHandler",
    "SamplingParams",
    "TransformersParams",
    "TransformersRolloutHandler",
    "VLLMParams",
    "VLLMRolloutHandler",
    "build_messages",
    "check_endpoint",
    "check_model",
    "check_vllm",
    "choice_text",
    "prompt_hash",
    "question_text",
    "sampling_of",
]
