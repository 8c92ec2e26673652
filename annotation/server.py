"""A local Label Studio: its own virtual environment, started on 127.0.0.1 with SQLite and local
file serving, stopped cleanly.

Label Studio pins its own Django stack, so it never shares mmcurate's environment: `ensure_env()`
builds `label-studio==VERSION` once into `$MMCURATE_CACHE/label-studio-VERSION-pyXY` (default
`~/.cache/mmcurate`), in a temporary folder renamed into place only after the server module imports,
under a file lock (a killed or concurrent build is never used half-made). The server runs as
`python -m label_studio.server` from that env (console scripts carry absolute paths; the module
does not), with the start flags `../shared/ENVIRONMENT.md` records: `--internal-host 127.0.0.1`,
`--enable-legacy-api-token` (else the admin token gets 401), local files rooted at the media folder.

mmcurate itself talks to it only through `label-studio-sdk` (annotation/client.py). The admin's
e-mail, password and token reach the child in its environment (`LABEL_STUDIO_USERNAME`, `_PASSWORD`,
`_USER_TOKEN`, which Label Studio reads when no flag is given), never its command line, and are
never logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERSION = "1.23.2"
"""The Label Studio release: the one that installs and runs offline here (ENVIRONMENT.md)."""
MEDIA_DIR = "media"
"""Below the document root: Label Studio serves local files below the root, never the root itself."""


def cache_root() -> Path:
    return Path(os.environ.get("MMCURATE_CACHE", Path.home() / ".cache" / "mmcurate"))


def env_dir() -> Path:
    return cache_root() / f"label-studio-{VERSION}-py{sys.version_info.major}{sys.version_info.minor}"


def _python(env: Path) -> Path:
    return env / "bin" / "python"


def ensure_env(log: Path | None = None) -> Path:
    """The Label Studio env, built on first use (about 2 minutes from a package mirror)."""
    env = env_dir()
    if _python(env).exists() and (env / "READY").exists():
        return env
    env.parent.mkdir(parents=True, exist_ok=True)
    with open(env.parent / f".{env.name}.lock", "w") as lock:
        _lock(lock, INSTALL_TIMEOUT)
        if (env / "READY").exists():
            return env
        tmp = Path(tempfile.mkdtemp(prefix=f".{env.name}-", dir=env.parent))
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
        try:
            subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, stdout=out, stderr=out, timeout=300)
            pip = [str(_python(tmp)), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            clean = {k: v for k, v in os.environ.items() if k != "PIP_CONSTRAINT"}  # mmcurate's pins are not its
            subprocess.run([*pip, f"label-studio=={VERSION}"], check=True, stdout=out, stderr=out, env=clean,
                           timeout=INSTALL_TIMEOUT)  # fmt: skip
            subprocess.run([str(_python(tmp)), "-c", "import label_studio.server"], check=True, stdout=out, stderr=out,
                           timeout=300)  # fmt: skip
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            if log:
                out.close()  # type: ignore[union-attr]
        shutil.rmtree(env, ignore_errors=True)
        # a venv's python is a symlink to the base interpreter and `-m` needs no script: it survives the rename
        tmp.rename(env)
        (env / "READY").write_text(json.dumps({"label-studio": VERSION}))
    return env


INSTALL_TIMEOUT = 1200.0
"""Seconds the env build may take (about 2 minutes from a package mirror), also the wait for
another process's build: past it, an error, never a hang."""


def _lock(lock: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"another process held the Label Studio env lock for over {timeout:.0f} s") from None
            time.sleep(1.0)


def new_token() -> str:
    """A 40-hex-digit API token (Label Studio's legacy token format)."""
    return secrets.token_hex(20)


@dataclass
class Server:
    """A running local Label Studio. `url`, and the admin's `email` and `token`."""

    root: Path
    port: int
    email: str
    password: str = field(repr=False)
    token: str = field(repr=False)
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def media(self) -> Path:
        """Where clips are put for Label Studio to serve (`/data/local-files/?d=media/...`)."""
        return self.root / MEDIA_DIR

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "PIP_"))}
        env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] = "true"
        env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(self.root)
        # the admin's credentials by environment, never on the command line (`ps` shows that to anyone)
        env["LABEL_STUDIO_USERNAME"], env["LABEL_STUDIO_PASSWORD"] = self.email, self.password
        env["LABEL_STUDIO_USER_TOKEN"] = self.token
        return env

    def _cli(self, *args: str) -> list[str]:
        return [str(_python(env_dir())), "-m", "label_studio.server", *args, "--data-dir", str(self.root / "data")]

    def start(self, timeout: float = 180.0) -> Server:
        """Start the server (migrating its SQLite database on first start) and wait until /health answers."""
        ensure_env()
        if self.healthy():  # else a stale server on the port would pass for this one
            raise RuntimeError(f"something already answers on {self.url}: stop it or choose another port")
        self.media.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the child holds it
        args = ["start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port),
                "--enable-legacy-api-token"]  # fmt: skip
        self.proc = subprocess.Popen(
            self._cli(*args), env=self._env(), stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        try:
            self._wait_healthy(timeout)
        except BaseException:  # a timeout, or Ctrl-C: the child runs in its own session, stop it
            self.stop()
            raise
        return self

    def _wait_healthy(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Label Studio exited with {self.proc.returncode}; see {self.root / 'server.log'}")
            if self.healthy():
                return
            time.sleep(0.5)
        raise TimeoutError(f"Label Studio did not answer on {self.url} within {timeout:.0f} s")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the server's process group (Django's autoreloader is off; gunicorn is not used),
        then SIGKILL after `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def user_token(self, email: str) -> str:
        """A user's own API token, read on the server side (`label-studio user`): the open-source API
        shows a user only their own token, so an operator hands annotators theirs this way."""
        done = subprocess.run(
            self._cli("user", "--username", email), env=self._env(), capture_output=True, text=True, check=True,
            timeout=300,
        )  # fmt: skip
        found = re.search(r"'token': '([0-9a-f]{40})'", done.stdout)
        if not found:
            raise RuntimeError(f"label-studio user printed no token for {email}")
        return found.group(1)


CREDENTIALS = "admin.json"


def local_server(root: Path, port: int, email: str = "admin@example.com", password: str | None = None,
                 token: str | None = None) -> Server:  # fmt: skip
    """A server rooted at `root`, its admin's credentials kept in `root/admin.json` (mode 600): Label
    Studio sets the admin's token and password only when it creates the user, so a restart on the
    same data must use the first start's (a new random token would get 401)."""
    root.mkdir(parents=True, exist_ok=True)
    saved = root / CREDENTIALS
    if saved.exists():
        known = json.loads(saved.read_text())
        if (token and token != known["token"]) or email != known["email"]:
            raise ValueError(f"{root} holds a Label Studio whose admin is {known['email']} with another token: "
                             "use that token, or another --root")  # fmt: skip
        return Server(root, port, known["email"], known["password"], known["token"])
    server = Server(root, port, email, password or secrets.token_urlsafe(12), token or new_token())
    write_secret(saved, json.dumps({"email": email, "password": server.password, "token": server.token}))
    return server


def write_secret(path: Path, text: str) -> None:
    """Write a file only its owner can read, also when it was there before with a wider mode."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


@contextlib.contextmanager
def running(root: Path, port: int, email: str = "admin@example.com", token: str | None = None) -> Iterator[Server]:
    """A server for the block; stopped after it, whatever happens."""
    server = local_server(root, port, email, token=token)
    try:
        yield server.start()
    finally:
        server.stop()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
