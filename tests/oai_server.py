"""A small OpenAI-compatible HTTP server for tests, answering with real generations.

`GET /v1/models` lists the served name; `POST /v1/chat/completions` takes `model`, `messages`, `n`,
`temperature`, `top_p`, `max_tokens` and `seed` and samples them with the transformers rollout
backend on a local model folder (seeded the same way, so with a seed its answers equal the
backend's own). Knobs for failure tests: `fail_next` (statuses to answer the next requests with),
`retry_after` (seconds sent as `Retry-After` with those failures), `delay` (seconds before
answering), `max_n` (answer fewer choices than asked, like APIs that ignore `n`), `split_think`
(move `<think>...</think>` into `reasoning_content`, like vLLM's reasoning parsers) and `api_key`
(require `Authorization: Bearer <key>`). `requests` holds the chat bodies received and
`authorization` the `Authorization` header of every request (None when absent).

    with OpenAIServer(folder, name="tiny") as server:
        server.base_url  # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mmcurate.stages.rollout import TransformersParams, TransformersRolloutHandler


class OpenAIServer:
    def __init__(self, model_dir: str | Path, name: str = "tiny", api_key: str | None = None) -> None:
        self.name, self.api_key = name, api_key
        self.backend = TransformersRolloutHandler(TransformersParams(model=str(model_dir), device="cpu"))
        self.model = self.backend.load_model()
        self.fail_next: list[int] = []
        self.retry_after: float | None = None
        self.delay = 0.0
        self.max_n: int | None = None
        self.split_think = False
        self.requests: list[dict[str, Any]] = []
        """Bodies of the chat requests received (failed ones included)."""
        self.authorization: list[str | None] = []
        """The Authorization header of each request (GET and POST, refused ones included), None when absent."""
        self._lock = threading.Lock()
        self._fail_lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAIServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="oai-server", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset(self) -> None:
        """Back to a well-behaved server (between tests sharing one instance)."""
        self.fail_next, self.retry_after, self.delay, self.max_n, self.split_think = [], None, 0.0, None, False
        self.requests.clear()
        self.authorization.clear()

    # -- the API ------------------------------------------------------------------------------

    def take_failure(self) -> int | None:
        with self._fail_lock:
            return self.fail_next.pop(0) if self.fail_next else None

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "owned_by": "mmcurate-tests"}]}

    def complete(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("model") != self.name:
            return 404, _error(f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return 400, _error("messages must be a non-empty list", "BadRequestError")
        n = int(body.get("n") or 1)
        max_tokens = int(body.get("max_tokens") or 64)
        sampling = {
            "k": n,
            "temperature": float(body.get("temperature", 1.0)),
            "top_p": float(body.get("top_p", 1.0)),
            "max_tokens": max_tokens,
            "seed": body.get("seed"),
        }
        try:
            with self._lock:  # one generation at a time, like a single-GPU server's engine loop
                texts = self.backend.run_inference([messages], self.model, {"sampling": sampling})[0]
        except (ValueError, TypeError) as exc:
            return 400, _error(str(exc), "BadRequestError")
        if self.max_n is not None:
            texts = texts[: self.max_n]
        tokenizer = self.model.tokenizer
        choices, completion_tokens = [], 0
        for i, text in enumerate(texts):
            used = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            completion_tokens += used
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if self.split_think and text.startswith("<think>") and "</think>" in text:
                reasoning, content = text[len("<think>") :].split("</think>", 1)
                message = {"role": "assistant", "content": content, "reasoning_content": reasoning}
            finish = "length" if used >= max_tokens else "stop"
            choices.append({"index": i, "message": message, "finish_reason": finish, "logprobs": None})
        prompt_tokens = 0  # not measured; the field is there for clients that read it
        return 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _handler_class(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
            pass

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            server.authorization.append(self.headers.get("Authorization"))  # list.append is atomic
            if server.api_key is None or self.headers.get("Authorization") == f"Bearer {server.api_key}":
                return True
            self._send(401, _error("Incorrect API key provided", "AuthenticationError"))
            return False

        def do_GET(self) -> None:
            if not self._authorized():
                return
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, server.models())
            else:
                self._send(404, _error(f"no route {self.path}", "NotFoundError"))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if not self._authorized():
                return
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, _error(f"no route {self.path}", "NotFoundError"))
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, _error("body is not JSON", "BadRequestError"))
                return
            server.requests.append(body)  # list.append is atomic
            if server.delay:
                time.sleep(server.delay)
            status = server.take_failure()
            if status is not None:
                wait = {} if server.retry_after is None else {"Retry-After": str(server.retry_after)}
                self._send(status, _error(f"simulated HTTP {status}", "APIError"), wait)
                return
            status, payload = server.complete(body)
            self._send(status, payload)

    return Handler
