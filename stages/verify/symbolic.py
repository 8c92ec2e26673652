"""Math answers: symbolic equivalence with HuggingFace `math-verify`, bounded in size, nesting and time.

In the main thread math-verify's own SIGALRM timeouts apply; in any other thread (Beam's threaded
runners, Dataflow's SDK harness), where SIGALRM cannot be used, each comparison runs in a worker
process, one per calling thread, killed and replaced when it overruns (see `verify_math`).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import subprocess
import sys
import threading
import time
from typing import Any, Literal

from .check import Check, checked
from .text import LATEX_WRAP

log = logging.getLogger(__name__)

_SCI = re.compile(r"(?<![\w\\.])(\d+(?:\.\d+)?)[eE]([-+]?\d+)(?![\w.])")
_MATH_STRIP = re.compile(r"\s+|\$|\\[,;:! ]|\\(?:left|right|displaystyle)(?![A-Za-z])")
_DELIMS = re.compile(r"^\s*(?:\$\$?|\\\(|\\\[)\s*|\s*(?:\$\$?|\\\)|\\\])\s*$")


def _math_norm(s: str) -> str:
    s = LATEX_WRAP.sub(r"\1", s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac"))
    return _MATH_STRIP.sub("", s).rstrip(".")


def _depth(s: str) -> int:
    depth = peak = 0
    for m in re.finditer(r"[{}()\[\]]", s):
        depth = depth + 1 if m.group() in "{([" else max(depth - 1, 0)
        peak = max(peak, depth)
    return peak


def _math_input(s: str) -> str:
    s = _DELIMS.sub("", _DELIMS.sub("", s.strip()))
    s = _SCI.sub(r"\1\\times 10^{\2}", s)
    return "\\boxed{" + s + "}"


def _math_compare(
    gold: str, pred: str, timeout_s: int | None, float_rounding: int, numeric_precision: int, strict: bool
) -> tuple[bool, str]:
    """math-verify's parse and verify; with `timeout_s` its SIGALRM timeouts apply (main thread only)."""
    from math_verify import parse
    from math_verify import verify as mv_verify
    from math_verify.errors import TimeoutException

    t = timeout_s or None
    parsed = []
    for side in (gold, pred):
        try:
            parsed.append(parse(_math_input(side), parsing_timeout=t, raise_on_error=True))
        except TimeoutException:
            return False, "timeout"
        except Exception:
            parsed.append([])
    if not parsed[0]:
        return False, "bad_reference"
    if not parsed[1]:
        return False, "unparseable_prediction"
    start = time.monotonic()
    try:
        ok = mv_verify(
            parsed[0],
            parsed[1],
            float_rounding=float_rounding,
            numeric_precision=numeric_precision,
            strict=strict,
            timeout_seconds=t,
        )
    except TimeoutException:
        return False, "timeout"
    except Exception:
        return False, "error"
    if not ok and t is not None and time.monotonic() - start >= 0.9 * t:
        return False, "timeout"
    return bool(ok), "ok" if ok else "mismatch"


def _worker_stdio() -> None:
    """A math worker process: answers `_math_compare` calls, pickled over its stdin/stdout, until EOF.

    Started as `python -c` (not multiprocessing's spawn, which re-imports the caller's `__main__`).
    Its own stdout is moved to stderr first so that nothing a library prints can corrupt the pipe.
    """
    from multiprocessing.connection import Connection

    import math_verify  # noqa: F401  (imported once, before saying ready)

    rfd, wfd = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    reader, writer = Connection(rfd, writable=False), Connection(wfd, readable=False)
    writer.send("ready")
    while True:
        try:
            args = reader.recv()
        except (EOFError, OSError):
            return
        try:
            result = _math_compare(*args)
        except BaseException as e:  # a worker answers every call
            result = (False, f"error:{type(e).__name__}")
        writer.send(result)


class _MathWorker:
    """A worker process for math comparisons outside the main thread; killed when a call overruns."""

    STARTUP_S = 60.0
    COMMAND = "from mmcurate.stages.verify.symbolic import _worker_stdio; _worker_stdio()"

    def __init__(self) -> None:
        from multiprocessing.connection import Connection

        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.COMMAND], stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.writer = Connection(os.dup(self.proc.stdin.fileno()), readable=False)
        self.reader = Connection(os.dup(self.proc.stdout.fileno()), writable=False)
        self.proc.stdin.close()
        self.proc.stdout.close()
        try:
            ready = self.reader.poll(self.STARTUP_S) and self.reader.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.close()
            raise RuntimeError("the math-verify worker did not start (is math-verify installed?)")

    def call(self, args: tuple[Any, ...], hard_timeout_s: float) -> tuple[bool, str] | None:
        """The worker's answer, or None when it overran (it is then killed) or died."""
        try:
            self.writer.send(args)
            if self.reader.poll(hard_timeout_s):
                return self.reader.recv()
        except (EOFError, OSError):
            pass
        self.close()
        return None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.writer.close()
        self.reader.close()


_local = threading.local()
_all_workers: list[_MathWorker] = []
_workers_lock = threading.Lock()


def _thread_worker() -> _MathWorker:
    worker = getattr(_local, "worker", None)
    if worker is None or not worker.alive():
        worker = _MathWorker()
        _local.worker = worker
        with _workers_lock:
            _all_workers[:] = [w for w in _all_workers if w.alive()] + [worker]
    return worker


@atexit.register
def _close_workers() -> None:
    with _workers_lock:
        for w in _all_workers:
            w.close()
        _all_workers.clear()


def _out_of_bounds(prediction: str, reference: str, max_chars: int, max_depth: int) -> Check | None:
    """The verdict on inputs too long or too deeply nested to hand to math-verify, else None."""
    if not isinstance(reference, str) or not reference.strip() or len(reference) > max_chars:
        return checked(False, "bad_reference")
    if _depth(reference) > max_depth:
        return checked(False, "bad_reference")
    if not isinstance(prediction, str) or not prediction.strip():
        return checked(False, "unparseable_prediction")
    if len(prediction) > max_chars:
        return checked(False, "too_long")
    if _depth(prediction) > max_depth:
        return checked(False, "too_deep")
    return None


def _compare_in_worker(args: tuple[Any, ...], timeout_s: int) -> Check | None:
    """The comparison in this thread's worker process; None when no worker can be started here."""
    try:
        worker = _thread_worker()
    except Exception as e:  # e.g. inside a daemonic process: no children allowed
        log.warning("math-verify worker unavailable (%s); comparing without a timeout", e)
        return None
    result = worker.call(args, 3 * max(timeout_s, 1) + 2)
    if result is None:
        _local.worker = None
        return checked(False, "timeout")
    correct, detail = result
    return checked(correct, detail)


def verify_math(
    prediction: str,
    reference: str,
    *,
    timeout_s: int = 2,
    isolation: Literal["auto", "process", "inline"] = "auto",
    max_chars: int = 1000,
    max_depth: int = 40,
    float_rounding: int = 6,
    numeric_precision: int = 15,
    strict: bool = True,
) -> Check:
    """Symbolic equivalence with math-verify, after a cheap normalised-string check.

    Inputs over `max_chars` or nested deeper than `max_depth` are rejected up front. In the main
    thread math-verify's SIGALRM timeouts apply (`timeout_s` per parse and per comparison; they
    replace any SIGALRM timer the caller had set). In any other thread each comparison runs in a
    worker process (one per calling thread, started on first use in about a second, `python -c`, so
    the caller's `__main__` is never re-imported), killed and replaced after `3 * timeout_s + 2` s
    (`isolation="auto"`; `"process"` or `"inline"` force one; `"inline"` off the main thread has no
    timeout).
    """
    bad = _out_of_bounds(prediction, reference, max_chars, max_depth)
    if bad is not None:
        return bad
    if _math_norm(prediction) == _math_norm(reference):
        return checked(True, "string_match")
    main = threading.current_thread() is threading.main_thread()
    args = (reference, prediction, timeout_s, float_rounding, numeric_precision, strict)
    if isolation == "process" or (isolation == "auto" and not main):
        check = _compare_in_worker(args, timeout_s)
        if check is not None:
            return check
    if not main:
        args = (reference, prediction, None, float_rounding, numeric_precision, strict)
    correct, detail = _math_compare(*args)
    return checked(correct, detail)
