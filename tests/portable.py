"""Run commands against Beam's portable job service and an EXTERNAL worker pool, the way Flink, Spark
and Dataflow drive Python workers, inside a network namespace that has only loopback.

    unshare -n python tests/portable.py COMMANDS.json RESULTS.json

Beam's gRPC servers bind to all interfaces (no flag changes that), so they run here, in a namespace
made by `unshare -n`, with `lo` brought up. COMMANDS.json is a list of {"argv": [...], "env": {...},
"pool_env": {...}, "timeout": s, "count": GLOB}; `count` makes the result say how many files match
GLOB after the command (a killed run's unit markers); `pool_env` is the worker pool's extra environment (the pool is
started again when it changes or has died: a fail point kills the pool's process group, as a lost
machine would be); each command gets the portable runner options appended (`--runner=PortableRunner
--job_endpoint=... --environment_type=EXTERNAL --environment_config=...`) and runs in turn; RESULTS.json
gets each one's exit status and the tail of its output. The worker pool's python (WORKER_PYTHON, or
this interpreter) comes first on PATH: the pool starts SDK workers with `python`, and a pool that
finds another python hangs the job.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

JOB_PORT, WORKER_PORT = 18099, 18100
START_TIMEOUT_S = 120.0


def loopback_namespace() -> tuple[list[str] | None, str]:
    """The command prefix that makes a network namespace with only loopback here (`unshare -n` as
    root, `unshare -rn` through a user namespace otherwise), or None and why not."""
    why = ""
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        try:
            done = subprocess.run([*prefix, "sh", "-c", "ip link set lo up && ip -o addr show lo"],
                                  capture_output=True, text=True, timeout=30)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            why = f"{' '.join(prefix)} could not run: {exc}"
            continue
        if done.returncode == 0 and "127.0.0.1" in done.stdout:
            return prefix, ""
        why = f"{' '.join(prefix)}: {done.stderr.strip() or done.stdout.strip()}"
    return None, f"no network namespace with only loopback here (needs root or user namespaces): {why}"


def wheel_worker_env(root: Path, repo: Path) -> Path:
    """A worker environment holding mmcurate only as its built wheel: a venv with the wheel installed
    and the current environment's third-party packages on its path (a plain path entry, so that
    folder's .pth files are not run; copies of them are, except the editable checkout's finder).
    Returns its python."""
    import sysconfig

    wheels, env, source = root / "wheel", root / "worker-env", root / "source"
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-co", "--exclude-standard", "-z"],
                            check=True, capture_output=True, timeout=60).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, listed):  # the checkout's own files only: no build/ left by an earlier build
        if (repo / rel).is_file():
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / rel, source / rel)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(source)], check=True, timeout=300, capture_output=True)  # fmt: skip
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, timeout=60).stdout.strip()  # fmt: skip
    deps = Path(sysconfig.get_paths()["purelib"])
    Path(site, "00-mmcurate-deps.pth").write_text(f"{deps}\n")  # sorts first: the .pth files below import from it
    for pth in deps.glob("*.pth"):  # what the packages' own .pth files set up (the CPU torchvision shim)
        if not pth.name.startswith("__editable__"):
            shutil.copy(pth, Path(site, pth.name))
    (wheel,) = wheels.glob("mmcurate-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, timeout=300, capture_output=True)  # fmt: skip
    return python


def portable_options(job_port: int = JOB_PORT, worker_port: int = WORKER_PORT) -> list[str]:
    return [
        "--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}",
        "--environment_type=EXTERNAL", f"--environment_config=localhost:{worker_port}",
    ]  # fmt: skip


def _wait_port(port: int, proc: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode} before listening")
        with socket.socket() as s:
            s.settimeout(1.0)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listened on port {port} within {START_TIMEOUT_S:.0f} s")


def _start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Started in its own session (a fail point kills that group alone), in the log's folder (not
    the checkout, so that the checkout is not on a worker's path)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=log.parent
        )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def main(commands_file: str, results_file: str) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)
    commands = json.loads(Path(commands_file).read_text())
    logs = Path(results_file).parent
    worker_python = os.environ.get("WORKER_PYTHON", sys.executable)
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(worker_python).parent), os.environ.get("PATH", "")]))
    env.pop("PYTHONPATH", None)  # the workers import mmcurate from their own environment only
    job = _start([sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                  f"--port={JOB_PORT}"], logs / "job-service.log", dict(os.environ))  # fmt: skip
    pool, pool_env, results = None, None, []
    try:
        _wait_port(JOB_PORT, job, time.monotonic() + START_TIMEOUT_S)
        for i, cmd in enumerate(commands):
            if pool is None or pool.poll() is not None or cmd.get("pool_env", {}) != pool_env:
                if pool is not None:
                    _stop(pool)
                pool_env = cmd.get("pool_env", {})
                argv = [worker_python, "-m", "apache_beam.runners.worker.worker_pool_main",
                        f"--service_port={WORKER_PORT}"]  # fmt: skip
                pool = _start(argv, logs / f"worker-pool-{i}.log", dict(env, **pool_env))
                _wait_port(WORKER_PORT, pool, time.monotonic() + START_TIMEOUT_S)
            try:
                done = subprocess.run(
                    [*cmd["argv"], *portable_options()], env=dict(os.environ, **cmd.get("env", {})),
                    capture_output=True, text=True, timeout=cmd.get("timeout", 600), start_new_session=True,
                )  # fmt: skip
                results.append({"rc": done.returncode, "tail": (done.stdout + done.stderr)[-4000:]})
                if cmd.get("count"):  # files left matching a glob (a killed run's unit markers)
                    results[-1]["counted"] = len(glob.glob(cmd["count"]))
            except subprocess.TimeoutExpired as exc:
                results.append({"rc": 124, "tail": f"timed out after {exc.timeout} s"})
    finally:
        _stop(job)
        if pool is not None:
            _stop(pool)
    Path(results_file).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
