"""Scrub every log record, from any library, before it is emitted (`install_log_redaction`).

The text and structure scrubbing is `redact`'s (`redact_text`, `redact_field`); this module only
decides which parts of a `logging.LogRecord` go through it and how the hook is installed. Stdlib only
and no other mmcurate imports, like `redact`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from .redact import REDACTED, redact, redact_field, redact_text

__all__ = ["RedactingFilter", "install_log_redaction", "redact_record", "uninstall_log_redaction"]

_STANDARD_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_TRACEBACK_FORMATTER = logging.Formatter()


def _redact_arg(arg: Any) -> Any:
    if arg is None or isinstance(arg, (bool, int, float)):
        return arg
    if isinstance(arg, (str, Mapping, list, tuple)):
        return redact(arg, register=False)
    return redact_text(str(arg))


def _redact_message(record: logging.LogRecord) -> None:
    """Format first (a `%s` argument may hold the URL), then scrub; the record keeps no raw args."""
    if record.args:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: logging reports it, with redacted parts
            record.msg = redact_text(record.msg)
            args = record.args
            record.args = (
                {k: _redact_arg(v) for k, v in args.items()}
                if isinstance(args, Mapping)
                else tuple(map(_redact_arg, args))
            )
            return
        record.args = ()
        record.msg = redact_text(message)
    elif isinstance(record.msg, (Mapping, list, tuple)):  # structured messages stay structured
        record.msg = redact(record.msg, register=False)
    else:
        record.msg = redact_text(record.msg)


def _redact_exception(record: logging.LogRecord) -> None:
    """Render the traceback once, scrubbed, into `exc_text`, and drop `exc_info`.

    Formatters print `exc_text` when it is set; clearing `exc_info` keeps handlers that re-render the
    live exception themselves (rich tracebacks, error trackers) from printing the raw message.
    """
    if record.exc_info:
        if not record.exc_text:
            record.exc_text = _TRACEBACK_FORMATTER.formatException(record.exc_info)
        record.exc_info = None
    if record.exc_text:
        record.exc_text = redact_text(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)


def _redact_extras(record: logging.LogRecord) -> None:
    """Fields passed with `extra=` (`%(url)s` in a format, structured/JSON log handlers)."""
    for name, value in list(record.__dict__.items()):
        if name not in _STANDARD_RECORD_ATTRS:
            record.__dict__[name] = redact_field(name, value, register=False)


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Scrub a log record in place: message and args, exception and stack text, `extra` fields.

    Idempotent (each handler may run it again). Never raises: if redaction itself fails the message is
    replaced, since emitting it unredacted is the one outcome not allowed.
    """
    try:
        _redact_message(record)
        _redact_exception(record)
        _redact_extras(record)
    except Exception as e:  # pragma: no cover - defensive
        record.msg, record.args = f"{REDACTED} (log redaction failed: {type(e).__name__})", ()
        record.exc_info = record.exc_text = record.stack_info = None
    return record


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs each record (`redact_record`) and lets it through."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


_FILTER = RedactingFilter()
_INSTALL_LOCK = threading.Lock()
_PATCH_MARK = "_mmcurate_redacting"


def _patch_handler_handle() -> None:
    """Wrap `logging.Handler.handle` (once) so every handler scrubs a record before filtering/emitting."""
    current: Callable[..., Any] = logging.Handler.handle
    if getattr(current, _PATCH_MARK, False):
        return

    def handle(self: logging.Handler, record: logging.LogRecord) -> Any:
        redact_record(record)
        return current(self, record)

    setattr(handle, _PATCH_MARK, True)
    handle.__wrapped__ = current  # type: ignore[attr-defined]
    logging.Handler.handle = handle  # type: ignore[method-assign]


def install_log_redaction() -> None:
    """Scrub every log record from every library before any handler emits it. Idempotent, thread-safe.

    A filter on a logger only sees records logged directly on that logger, not those propagated from
    child loggers, so the filter goes on the root logger *and* its current handlers. Handlers added
    later (by Beam, a library, `logging.basicConfig`), handlers on non-root loggers and
    `logging.lastResort` are covered by wrapping `logging.Handler.handle`: it is the one call every
    emitted record goes through (`Logger.callHandlers`, `QueueListener`, `lastResort`), whoever
    created the record or the handler. A `setLogRecordFactory` factory was not chosen: it runs before
    `extra=` fields are merged, misses records rebuilt with `makeLogRecord` (queue / socket listeners
    receiving records from worker processes), formats eagerly, and a library installing its own
    factory silently disables it. Only a handler subclass overriding `handle()` without calling the
    base class escapes the wrapper (in the stdlib only `NullHandler`, which emits nothing). Beam
    workers are separate processes: call this in each one too (e.g. in a DoFn's `setup`).
    """
    with _INSTALL_LOCK:
        root = logging.getLogger()
        for target in (root, *root.handlers):
            if not any(isinstance(f, RedactingFilter) for f in target.filters):
                target.addFilter(_FILTER)
        _patch_handler_handle()


def uninstall_log_redaction() -> None:
    """Undo `install_log_redaction` (tests): unwrap `Handler.handle`, drop the root filters."""
    with _INSTALL_LOCK:
        current = logging.Handler.handle
        if getattr(current, _PATCH_MARK, False):
            logging.Handler.handle = current.__wrapped__  # type: ignore[attr-defined,method-assign]
        root = logging.getLogger()
        for target in (root, *root.handlers):
            for f in [f for f in target.filters if isinstance(f, RedactingFilter)]:
                target.removeFilter(f)
