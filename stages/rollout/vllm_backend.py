"""The vLLM backend (GPU hosts): Beam's own `VLLMChatModelHandler`, a vLLM server per worker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmcurate.stages.base import ModelUnavailable
from mmcurate.stages.io.weights import WeightsUnavailable, is_remote, local_copy, stat

from .handler import RolloutHandler
from .openai_backend import choice_text
from .params import SamplingParams, VLLMParams, sampling_of
from .prompts import Messages


def check_vllm(params: VLLMParams | None = None, key: str = "rollout.vllm") -> None:
    """vLLM and the openai client must be importable where the workers run (a CUDA host)."""
    import importlib.util

    if params is not None and not params.model:
        raise ModelUnavailable(f"{key}.model is not set: the hub name or folder vLLM should serve")
    if params is not None and is_remote(params.model):  # a bucket folder: each worker copies it once
        try:
            stat(params.model.rstrip("/") + "/config.json")
        except WeightsUnavailable as exc:
            raise ModelUnavailable(f"{key}.model: {exc} (a folder written by save_pretrained)") from None
    missing = [name for name in ("vllm", "openai") if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelUnavailable(
            f"vllm is not installed: {' and '.join(missing)} cannot be imported here. vLLM needs a CUDA GPU "
            "and its own environment (it pins its own torch and transformers); run on a GPU host, see docs/rl.md, "
            "or serve the model with `vllm serve` and use rollout.backend: openai"
        )


class VLLMRolloutHandler(RolloutHandler):
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

            model = self.params.model
            self._beam = VLLMChatModelHandler(
                local_copy(model) if is_remote(model) else model,  # a bucket folder: copied once per machine
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

        s = sampling_of(self.sampling, inference_args)
        args: dict[str, Any] = {"n": s.k, "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
        if s.seed is not None:
            args["seed"] = s.seed
        # Beam passes message.content through to the openai client as is, so content parts survive
        chats = [[OpenAIChatMessage(m["role"], m["content"]) for m in messages] for messages in batch]
        results = self._handler().run_inference(chats, model, args)
        out = []
        for result in results:
            choices = sorted(result.inference.choices, key=lambda c: c.index)
            out.append([choice_text({"message": c.message.model_dump()}) for c in choices])
        return out

    proxy_safe = True
    """Beam's vLLM handler serves its model through methods (a server per machine), so it may be
    shared across processes (`placement.rollout.share_model`): it is by default."""

    def share_model_across_processes(self) -> bool:
        return True
