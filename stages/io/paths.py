"""Reading one named file safely: never a FIFO or a device, never outside the corpus, never forever.

* A path that is not a regular file (FIFO, device, directory) is refused without being opened for
  reading: locally it is opened with O_NONBLOCK (which returns at once even for a FIFO nobody writes
  to) and checked with fstat on that descriptor, so there is no window between check and read.
* A relative path named by a row resolves inside the input's root; `..` out of it, an absolute
  path, a URI, or a symlink whose target lies outside is refused (`outside_root`) unless
  `read.allow_outside_root` is set.
* A read that takes longer than `timeout_s` is abandoned (`read_timeout`): it runs in a helper
  thread, and the record is quarantined when the deadline passes. A thread blocked in the kernel
  cannot be cancelled, so it is left behind (a hung network mount would hold it); the run goes on.
* `filesystem(uri)` opens a URI's filesystem for the entry points (inputs listed, the output
  checked): a protocol whose package is not installed (s3fs, gcsfs) is an error naming the extra
  to install, not an ImportError traceback from deep inside a run.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import posixpath
import stat
from collections.abc import Callable

import fsspec
from fsspec.core import split_protocol
from fsspec.registry import known_implementations


class ReadRefused(Exception):
    """This file is not read: `reason` is the quarantine code (not_a_file, outside_root, read_timeout)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """The local file system (its protocol is "file", alone or among aliases)."""
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
"""Protocol -> the mmcurate extra that installs its filesystem package."""


def _protocols(uri: str) -> list[str]:
    """The protocols of a (possibly chained, `simplecache::s3://...`) URI, outermost first."""
    return [split_protocol(part)[0] or "file" for part in uri.split("::")]


def _unusable(uri: str, exc: Exception) -> str:
    """What to tell the user about a protocol fsspec could not load: the package, and how to install it."""
    for protocol in _protocols(uri):
        if protocol not in fsspec.available_protocols():
            return f"{uri}: fsspec knows no {protocol}:// filesystem"
        try:
            fsspec.get_filesystem_class(protocol)
        except ImportError as err:
            cause = f" ({err.__cause__})" if err.__cause__ else ""
            package = known_implementations[protocol]["class"].split(".")[0]
            if protocol in EXTRAS:
                return f"{uri} needs {package}: pip install 'mmcurate[{EXTRAS[protocol]}]'{cause}"
            if package != "fsspec":
                return f"{uri} needs {package}: pip install {package}{cause}"
            return f"{uri}: {err}{cause}"
    return f"{uri}: {exc}"


def filesystem(uri: str, error: Callable[[str], Exception]) -> tuple[fsspec.AbstractFileSystem, str]:
    """`fsspec.core.url_to_fs(uri)`, raising `error` (InputError for inputs, OutputError for the output)
    when the URI's protocol is unknown or its package (s3fs, gcsfs) is not installed: the CLI then
    says which package or extra to install instead of printing an ImportError traceback."""
    try:
        return fsspec.core.url_to_fs(uri)
    except ImportError as exc:
        raise error(_unusable(uri, exc)) from exc
    except ValueError as exc:
        if all(p in fsspec.available_protocols() for p in _protocols(uri)):
            raise  # a known protocol, refused for another reason (its options): fsspec's own message
        raise error(_unusable(uri, exc)) from exc


_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISDIR, "directory"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))  # fmt: skip


def _not_regular(mode: int) -> str | None:
    return None if stat.S_ISREG(mode) else next((name for test, name in _KINDS if test(mode)), "special file")


def check_regular(uri: str) -> None:
    """Raise ReadRefused(not_a_file) unless `uri` is a regular file; never blocks (stat opens nothing)."""
    fs, path = fsspec.core.url_to_fs(uri)
    if is_local(fs):
        kind = _not_regular(os.stat(path).st_mode)
        if kind:
            raise ReadRefused("not_a_file", f"{path} is a {kind}, not a regular file: not read")
        return
    info = fs.info(path)
    if info.get("type") != "file":
        raise ReadRefused("not_a_file", f"{uri} is a {info.get('type')}, not a file: not read")


def _read_local(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        kind = _not_regular(os.fstat(fd).st_mode)
        if kind:
            raise ReadRefused("not_a_file", f"{path} is a {kind}, not a regular file: not read")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def _read_any(uri: str) -> bytes:
    fs, path = fsspec.core.url_to_fs(uri)
    if is_local(fs):
        return _read_local(path)
    check_regular(uri)
    return fs.cat_file(path)


@functools.lru_cache(maxsize=1)
def _pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="mmcurate-read")


def read_bytes(uri: str, timeout_s: float | None = None) -> bytes:
    """The file's bytes; ReadRefused for a file that is not regular or takes over `timeout_s`;
    FileNotFoundError / OSError as the filesystem raises them."""
    if not timeout_s:
        return _read_any(uri)
    future = _pool().submit(_read_any, uri)
    try:
        return future.result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        raise ReadRefused("read_timeout", f"{uri}: no data after {timeout_s:g} s; abandoned") from None


def _split(uri: str) -> tuple[str, str]:
    return tuple(uri.split("://", 1)) if "://" in uri else ("", uri)  # type: ignore[return-value]


def _inside(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root + "/") or root == "/"


def resolve_inside(value: str, root: str, allow_outside: bool = False) -> str:
    """The file a row names: relative paths against `root` (any fsspec URI), kept inside it."""
    if "://" in value or value.startswith("/"):
        if allow_outside:
            return value
        raise ReadRefused(
            "outside_root", f"{value!r} is not relative to {root} (set read.allow_outside_root to read it)"
        )
    protocol, base = _split(root)
    joined = posixpath.normpath(posixpath.join(base, value))
    if not _inside(joined, posixpath.normpath(base)) and not allow_outside:
        raise ReadRefused("outside_root", f"{value!r} leaves {root} (set read.allow_outside_root to read it)")
    if not protocol and not allow_outside:
        real, real_root = os.path.realpath(joined), os.path.realpath(base)
        if not _inside(real, real_root):
            raise ReadRefused("outside_root", f"{value!r} is a link to {real}, outside {root}")
    return f"{protocol}://{joined}" if protocol else joined
