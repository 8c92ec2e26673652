"""The OpenAI-compatible backend: any `/chat/completions` endpoint (vLLM, SGLang, a hosted API).

Requests go through the official `openai` client, whose retries and timeouts we use rather than
our own: it retries 408, 409, 429, 5xx, timeouts and connection errors `rollout.openai.retries`
times with exponential backoff and honours Retry-After. On top of it: `n=k` per request, topped up
when a server returns fewer choices; a thread pool over the batch; a warning per retry (the client
logs them at INFO only); errors that name the setting to fix. `openai` is imported only where a
client is built, so a run without a rollout stage never loads it. Credentials in the endpoint URL
never reach a log or an error message (`redact_text`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mmcurate.schemas.redact import install_log_redaction, redact_text
from mmcurate.stages.base import ModelUnavailable

from .handler import RolloutHandler
from .params import OpenAIParams, SamplingParams, sampling_of
from .prompts import Messages

if TYPE_CHECKING:
    import openai

log = logging.getLogger(__package__)  # the package's logger, as before the split into modules

NO_KEY = "EMPTY"
"""The api_key the openai client is given when none is configured; it is never sent (see `_auth`)."""


class EndpointError(RuntimeError):
    """A request failed after its retries (or with an error that retrying cannot fix)."""


def _key(params: OpenAIParams) -> str:
    return os.environ.get(params.api_key_env, "") if params.api_key_env else ""


def _auth(params: OpenAIParams) -> dict[str, Any] | None:
    """Per-request headers: without a key, no Authorization header at all (the client would send
    `Bearer EMPTY`, which a server without keys may refuse)."""
    import openai

    return None if _key(params) else {"Authorization": openai.Omit()}


def _shown(params: OpenAIParams) -> str:
    """The endpoint as messages name it: credentials in the URL never reach a log or a ledger."""
    return redact_text(params.base_url)


def _client(params: OpenAIParams, retries: int, read_timeout: float, http_client: Any = None) -> openai.OpenAI:
    """The openai client for `params`: its retries, its timeouts, the key from `$api_key_env` (or `NO_KEY`)."""
    import openai

    return openai.OpenAI(
        base_url=params.base_url,
        api_key=_key(params) or NO_KEY,  # never None: the client would read $OPENAI_API_KEY itself
        max_retries=retries,
        timeout=openai.Timeout(read_timeout, connect=params.connect_timeout),
        http_client=http_client,
    )


def _problem(exc: BaseException) -> str:
    """What went wrong: the HTTP status and body, or the client's error and its cause (ReadTimeout, ConnectError)."""
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    if status is not None and response is not None:
        return f"HTTP {status}: {response.text[:300]}"
    cause = exc.__cause__
    return f"{type(exc).__name__} ({type(cause).__name__}: {cause})" if cause else f"{type(exc).__name__}: {exc}"


def check_endpoint(params: OpenAIParams, key: str = "rollout.openai") -> None:
    """GET /models must answer (no retries) and list the model; say which setting to fix when it does not."""
    if not params.model:
        raise ModelUnavailable(f"{key}.model is not set: the model name {_shown(params)} serves")
    import openai

    client = _client(params, retries=0, read_timeout=min(params.timeout, 30.0))
    try:
        served = [m.id for m in client.models.list(extra_headers=_auth(params)).data]
    except openai.APIError as exc:
        raise ModelUnavailable(redact_text(_check_failure(params, key, exc))) from exc
    except (AttributeError, TypeError, ValueError) as exc:
        raise ModelUnavailable(f"{key}.base_url: {_shown(params)}/models is not an OpenAI model list") from exc
    finally:
        client.close()
    if params.model not in served:
        raise ModelUnavailable(f"{key}.model: {_shown(params)} does not serve {params.model!r}; it serves {served}")


def _check_failure(params: OpenAIParams, key: str, exc: openai.APIError) -> str:
    """The message of a failed GET /models, naming the setting to fix."""
    import openai

    if isinstance(exc, openai.APIConnectionError):  # timeouts included
        return f"{key}.base_url: {_shown(params)} does not answer GET /models ({_problem(exc)})"
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return (
            f"{key}.api_key_env: {_shown(params)} refused the key from ${params.api_key_env} (HTTP {exc.status_code})"
        )
    if isinstance(exc, openai.APIStatusError):
        return f"{key}.base_url: GET {_shown(params)}/models answered HTTP {exc.status_code}"
    return f"{key}.base_url: {_shown(params)}/models is not an OpenAI model list ({_problem(exc)})"


def choice_text(choice: dict[str, Any]) -> str:
    """The raw answer: a reasoning field split off by the server goes back in front as <think>...</think>."""
    message = choice.get("message") or {}
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
    return f"<think>{reasoning}</think>{content}" if reasoning else content


class _Attempts:
    """HTTP event hooks counting the attempts of each thread's current request and warning on each retry.

    The client retries on its own and logs that at INFO; counting here keeps the final error honest
    ("failed 3 times") whatever the client decided (a 4xx is tried once, Retry-After may forbid a retry).
    """

    def __init__(self, retries: int) -> None:
        self.retries = retries
        self.local = threading.local()

    def start(self) -> None:
        self.local.count, self.local.last = 0, ""

    @property
    def count(self) -> int:
        return getattr(self.local, "count", 0)

    def on_request(self, request: Any) -> None:
        n = self.count
        if n:
            method, url = request.method, redact_text(str(request.url))
            log.warning(
                "rollout request failed (%s); retry %d/%d of %s %s", self.local.last, n, self.retries, method, url
            )
        self.local.count, self.local.last = n + 1, "no answer: timeout or connection error"

    def on_response(self, response: Any) -> None:
        if response.status_code >= 400:
            self.local.last = f"HTTP {response.status_code}"


class _Client:
    """One openai client per worker (thread-safe, pooled connections) and the thread pool over a batch."""

    def __init__(self, params: OpenAIParams) -> None:
        import openai

        self.params = params
        self.attempts = _Attempts(params.retries)
        hooks = {"request": [self.attempts.on_request], "response": [self.attempts.on_response]}
        self.openai = _client(params, params.retries, params.timeout, openai.DefaultHttpxClient(event_hooks=hooks))
        self.headers = _auth(params)
        self.pool = concurrent.futures.ThreadPoolExecutor(params.max_concurrency, thread_name_prefix="rollout")

    def complete(self, messages: Messages, s: SamplingParams, n: int, seed: int | None) -> list[dict[str, Any]]:
        """One request for n choices (the client retries it); the choices as dicts, in index order."""
        import openai

        sampling: dict[str, Any] = {"n": n, "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
        if seed is not None:
            sampling["seed"] = seed
        self.attempts.start()
        try:
            completion = self.openai.chat.completions.create(
                model=self.params.model,
                messages=messages,
                **sampling,
                extra_body=self.params.extra_body or None,
                extra_headers=self.headers,
            )
        except openai.APIError as exc:
            tries = max(1, self.attempts.count)
            times = f"{tries} time{'s' if tries > 1 else ''}"
            where = f"POST {_shown(self.params)}/chat/completions"
            raise EndpointError(redact_text(f"{where} failed {times}; last: {_problem(exc)}")) from exc
        choices = [c.model_dump() for c in completion.choices or []]
        return sorted(choices, key=lambda c: c.get("index") or 0)


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
            seed = None if s.seed is None else s.seed + len(texts)
            texts += [choice_text(c) for c in client.complete(messages, s, s.k - len(texts), seed)]
            if len(texts) >= s.k:
                return texts[: s.k]
        raise EndpointError(f"{_shown(self.params)} returned {len(texts)} of {s.k} samples after {s.k} requests")

    def run_inference(
        self, batch: Sequence[Messages], model: _Client, inference_args: dict[str, Any] | None = None
    ) -> list[list[str]]:
        s = sampling_of(self.sampling, inference_args)
        futures = [model.pool.submit(self._one, model, m, s) for m in batch]
        return [f.result() for f in futures]
