"""A local Label Studio: its own virtual environment, started on 127.0.0.1 with SQLite and local
file serving, stopped cleanly.

Label Studio pins its own Django stack, so it never shares mmcurate's environment: `ensure_env()`
builds `label-studio==VERSION` once into `$MMCURATE_CACHE/label-studio-VERSION-pyXY` (default
`~/.cache/mmcurate`), in a temporary folder renamed into place only after the server module imports,
under a file lock (a killed or concurrent build is never used half-made). The server runs as
`python -m label_studio.server` from that env (console scripts carry absolute paths; the module
does not), with the start flags `../shared/ENVIRONMENT.md` records: `--internal-host 127.0.0.1`,
`--enable-legacy-api-token` (else the admin token gets 401), local files rooted at the media folder.

mmcurate itself talks to it only through `label-studio-sdk` (annotation/client.py). The token is
passed on the command line of the child (Label Studio reads it nowhere else) and never logged.
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
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (env / "READY").exists():
            return env
        tmp = Path(tempfile.mkdtemp(prefix=f".{env.name}-", dir=env.parent))
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
        try:
            subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, stdout=out, stderr=out)
            pip = [str(_python(tmp)), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            clean = {k: v for k, v in os.environ.items() if k != "PIP_CONSTRAINT"}  # mmcurate's pins are not its
            subprocess.run([*pip, f"label-studio=={VERSION}"], check=True, stdout=out, stderr=out, env=clean)
            subprocess.run([str(_python(tmp)), "-c", "import label_studio.server"], check=True, stdout=out, stderr=out)
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
        return env

    def _cli(self, *args: str) -> list[str]:
        return [str(_python(env_dir())), "-m", "label_studio.server", *args, "--data-dir", str(self.root / "data")]

    def start(self, timeout: float = 180.0) -> Server:
        """Start the server (migrating its SQLite database on first start) and wait until /health answers."""
        ensure_env()
        self.media.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the child holds it
        args = ["start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port),
                "--username", self.email, "--password", self.password, "--user-token", self.token,
                "--enable-legacy-api-token"]  # fmt: skip
        self.proc = subprocess.Popen(
            self._cli(*args), env=self._env(), stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Label Studio exited with {self.proc.returncode}; see {self.root / 'server.log'}")
            if self.healthy():
                return self
            time.sleep(0.5)
        self.stop()
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
            self._cli("user", "--username", email), env=self._env(), capture_output=True, text=True, check=True
        )
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
    saved.touch(mode=0o600)
    saved.write_text(json.dumps({"email": email, "password": server.password, "token": server.token}))
    return server


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
