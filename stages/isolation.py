"""Run a function in a child process with a timeout, so what hangs or crashes costs one record.

Native decoders hang on some files (a stalled mount, a FIFO, a malformed stream) and crash on others;
neither may take a worker down. `Isolated` keeps one spawned child per worker (pebble), replaced
after `max_tasks` calls to bound what a native library leaks; a call that runs over its timeout is
killed, a child that dies is replaced, and both come back as `ChildFailed` with a kind the caller
maps to its reason codes. `isolate=False` runs in-process (no timeout), for tests and debugging.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable
from typing import Any


class ChildFailed(Exception):
    """The call did not return: `kind` is `timeout`, `crashed` or `error` (it raised)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _InProcess:
    """The pool's interface, run in this process."""

    def schedule(self, fn: Any, args: tuple = (), timeout: float | None = None) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        try:
            fut.set_result(fn(*args))
        except Exception as exc:
            fut.set_exception(exc)
        return fut

    def stop(self) -> None:
        return None

    def close(self) -> None:
        return None

    def join(self) -> None:
        return None


class Isolated:
    """One child process per worker; `call` runs a picklable function in it with a timeout."""

    def __init__(
        self,
        isolate: bool = True,
        max_tasks: int = 500,
        passthrough: tuple[type[BaseException], ...] = (),
        ready: Callable[[], Any] | None = None,
        ready_timeout: float = 300.0,
    ) -> None:
        """`passthrough`: exception types the function raises on purpose, re-raised as they are.
        `ready`: called once in a fresh child before any work (import the decoders): a child that
        cannot start fails the worker loudly instead of failing every record."""
        self.passthrough = passthrough
        if not isolate:
            self.pool: Any = _InProcess()
            return
        import pebble

        self.pool = pebble.ProcessPool(max_workers=1, max_tasks=max_tasks, context=multiprocessing.get_context("spawn"))
        if ready is not None:
            try:
                self.pool.schedule(ready).result(timeout=ready_timeout)
            except Exception as exc:
                self.pool.stop()
                raise RuntimeError(f"the child process cannot start: {type(exc).__name__}: {exc}") from exc

    def call(self, fn: Callable[..., Any], args: tuple, timeout: float, what: str) -> Any:
        """`fn(*args)` in the child; raises ChildFailed (or a passthrough exception)."""
        try:
            return self.pool.schedule(fn, args=args, timeout=timeout).result()
        except self.passthrough:
            raise
        except concurrent.futures.TimeoutError:
            raise ChildFailed("timeout", f"{what} ran over {timeout:.0f} s and was killed") from None
        except Exception as exc:
            if type(exc).__name__ == "ProcessExpired":  # pebble's: the child died (signal, abort)
                raise ChildFailed("crashed", f"{what}: the child process died ({exc})") from None
            raise ChildFailed("error", f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        self.pool.close()
        self.pool.join()
