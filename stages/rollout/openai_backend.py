"""The OpenAI-compatible backend: any `/chat/completions` endpoint (vLLM, SGLang, a hosted API).

`n=k` per request, a thread pool over the batch, retries with backoff per request; credentials in
the endpoint URL never reach a log or an error message.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from mmcurate.schemas.redact import install_log_redaction, redact_text
from mmcurate.stages.base import ModelUnavailable

from .handler import RolloutHandler
from .params import OpenAIParams, SamplingParams, sampling_of
from .prompts import Messages

log = logging.getLogger(__package__)  # the package's logger, as before the split into modules


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


def choice_text(choice: dict[str, Any]) -> str:
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


class OpenAIRolloutHandler(RolloutHandler):
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
            texts += [choice_text(c) for c in sorted(choices, key=lambda c: c.get("index", 0))]
            if len(texts) >= s.k:
                return texts[: s.k]
        raise EndpointError(f"{_shown(self.params)} returned {len(texts)} of {s.k} samples after {s.k} requests")

    def run_inference(
        self, batch: Sequence[Messages], model: _Client, inference_args: dict[str, Any] | None = None
    ) -> list[list[str]]:
        s = sampling_of(self.sampling, inference_args)
        futures = [model.pool.submit(self._one, model, m, s) for m in batch]
        return [f.result() for f in futures]
