"""The consumers' own loaders (verl, LLaMA-Factory) in a virtual environment of their own.

verl 0.9.1 and LLaMA-Factory 0.9.5 pin transformers (and datasets) below what .venv has, so their code
runs in one separate "consumers" env, built once and cached, and the tests talk to it through driver
scripts (`tests/consumers/*_check.py`) that take a JSON file of arguments and write a JSON result.

The env (`ensure_env()`):
- lives in `$MMCURATE_CONSUMERS_CACHE/consumers-<key>` (default `~/.cache/mmcurate/`), the key a hash of
  `consumers/requirements.txt`, the Python version, the borrowed torch/torchvision and these build
  steps; a build goes into a temporary folder beside it that is renamed into place only once the
  env imports verl's and LLaMA-Factory's data and reward modules, so a killed build is never reused;
  an fcntl lock makes concurrent pytest-xdist workers wait for one build instead of running two;
- gets every line of requirements.txt with `pip install --no-deps` (the file is the whole closure);
- borrows torch and torchvision from the test interpreter: symlinks to their installed folders, put on
  the consumers' `sys.path` after its own site-packages by a `.pth` file (relative, so the env can be
  renamed), plus the repo's CPU shim (env/install_cpu_shim.py). Installing the CPU wheel instead took
  25 s and 760 MB per cache here, linking takes no time;
- holds a stub `torchaudio` (no release exists for torch 2.13): LLaMA-Factory's mm_plugin imports it at
  the top and calls it only for audio inputs, which our datasets have none of. Any use raises.

mmcurate itself is put on the drivers' PYTHONPATH as a symlink tree mirroring the installed layout
(`package_tree()`: pyproject's package-dir maps `mmcurate.stages` to `stages/`, ...), made per test
session: always the working tree's code, nothing to reinstall (a `pip install --no-deps .` builds a
wheel, snapshots the code, and must be redone on every change).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DRIVERS = HERE / "consumers"
REQUIREMENTS = DRIVERS / "requirements.txt"
SHIM_INSTALLER = REPO / "env" / "install_cpu_shim.py"
BORROWED = ("torch", "torchvision")
"""Distributions linked from the test interpreter instead of installed."""
BUILD_STEPS = "1"
"""Part of the cache key: bump when `_build` changes what an env contains."""
READY = "READY.json"

TORCHAUDIO_STUB = '''"""Stub (mmcurate tests/consumers_env.py): no torchaudio release exists for torch 2.13.

LLaMA-Factory 0.9.5's data/mm_plugin.py imports torchaudio at the top and calls it only to decode audio
inputs; the datasets checked here have none. Any use fails loudly.
"""


def __getattr__(name):
    if name.startswith("__"):  # getattr(module, "__version__", None) and the import system's probes
        raise AttributeError(name)
    raise ImportError(f"torchaudio is a stub in the mmcurate consumers env (torchaudio.{name} was asked for)")
'''

WARMUP = (
    "import qwen_vl_utils, verl.utils.dataset.rl_dataset, verl.trainer.ppo.utils, verl.trainer.ppo.reward, "
    "verl.experimental.reward_loop, verl.experimental.reward_loop.reward_manager, verl.workers.reward_manager, "
    "verl.utils.tokenizer.continuous_token_wiring, llamafactory.data, llamafactory.data.loader, "
    "llamafactory.hparams, llamafactory.model, transformers.models.qwen2_vl.processing_qwen2_vl, "
    "transformers.models.qwen2_vl.image_processing_qwen2_vl, transformers.models.qwen2_vl.modeling_qwen2_vl, "
    "psutil, PIL.Image; PIL.Image.init()"
)
"""Imported once at build time: the smoke test of a new env, and it byte-compiles what the drivers use
(pip runs with --no-compile, which halves the build; the drivers run with the caller's
PYTHONDONTWRITEBYTECODE, set on these machines, so they write no bytecode into the env or the repo)."""


class ConsumersEnvUnavailable(RuntimeError):
    """The env cannot be built on this machine (e.g. the test interpreter has no torch to lend)."""


def cache_root() -> Path:
    root = os.environ.get("MMCURATE_CONSUMERS_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "mmcurate"


def _distribution(name: str) -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ConsumersEnvUnavailable(
            f"the consumers env borrows {name} from the test interpreter ({sys.executable}), which has none"
        ) from exc


def _top_level(dist: importlib.metadata.Distribution) -> list[Path]:
    """The folders and files a distribution installed directly into its site-packages (packages, its
    .dist-info, auditwheel's .libs), from its RECORD."""
    names = {f.parts[0] for f in dist.files or () if f.parts and f.parts[0] != ".."}
    return sorted(Path(dist.locate_file(n)) for n in names if n != "__pycache__")


def env_key() -> str:
    h = hashlib.sha256()
    h.update(REQUIREMENTS.read_bytes())
    h.update(f"{sys.implementation.cache_tag} {sys.version} {sysconfig.get_platform()}".encode())
    for name in BORROWED:
        dist = _distribution(name)
        h.update(f"{name}=={dist.version} at {dist.locate_file('')}".encode())
    h.update(SHIM_INSTALLER.read_bytes())
    h.update((REPO / "env" / "torchvision_cpu_shim.py").read_bytes())
    h.update(TORCHAUDIO_STUB.encode())
    h.update(WARMUP.encode())
    h.update(BUILD_STEPS.encode())
    return h.hexdigest()[:16]


def env_python(env: Path) -> Path:
    return env / "bin" / "python"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_env() -> Path:
    """The consumers env's folder: the cached one, or one built now (about a minute, once)."""
    root, key = cache_root(), env_key()
    final = root / f"consumers-{key}"
    if (final / READY).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".consumers-{key}.lock"):
        if (final / READY).is_file():  # another worker built it while this one waited
            return final
        if final.exists():  # not ours: an env only appears by rename, with its marker
            shutil.rmtree(final)
        for stale in root.glob(f".consumers-{key}-build-*"):  # a killed build's leftovers
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".consumers-{key}-build-", dir=root))
        try:
            _build(tmp, key)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _run(cmd: list[str], what: str, timeout: float = 600, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"consumers env: {what} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-6000:]}")
    return proc.stdout


def _build(tmp: Path, key: str) -> None:
    start = time.monotonic()
    _run([sys.executable, "-m", "venv", "--without-pip", str(tmp)], "venv")
    python = str(env_python(tmp))
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], "site").strip())
    borrowed, stubs = tmp / "borrowed", tmp / "stubs"
    borrowed.mkdir()
    versions = {}
    for name in BORROWED:
        dist = _distribution(name)
        versions[name] = dist.version
        for path in _top_level(dist):
            (borrowed / path.name).symlink_to(path, target_is_directory=path.is_dir())
    (stubs / "torchaudio").mkdir(parents=True)
    (stubs / "torchaudio" / "__init__.py").write_text(TORCHAUDIO_STUB)
    # .pth lines are relative to the site folder; appended after it, so the env's own packages win
    lines = [os.path.relpath(borrowed, site), os.path.relpath(stubs, site)]
    (site / "zz_mmcurate_consumers.pth").write_text("\n".join(lines) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-compile", "-q"]
    _run([*pip, "--disable-pip-version-check", "-r", str(REQUIREMENTS)], "pip install -r requirements.txt")
    _run([python, str(SHIM_INSTALLER)], "torchvision CPU shim")
    warm = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    _run([python, "-c", WARMUP], "importing verl's and LLaMA-Factory's modules", env=warm)
    info = {"key": key, "python": sys.version.split()[0], "borrowed": versions, "build_s": time.monotonic() - start}
    (tmp / READY).write_text(json.dumps(info, indent=1))


def package_tree(dest: Path) -> Path:
    """A folder that makes `import mmcurate` work as installed (pyproject's package-dir mapping) by
    symlinks into the working tree; put it on PYTHONPATH."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    mapping: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for name in sorted(mapping, key=lambda n: n.count(".")):
        source, target = REPO / mapping[name], dest.joinpath(*name.split("."))
        inner = {n.split(".")[-1] for n in mapping if n.startswith(name + ".") and n.count(".") == name.count(".") + 1}
        if not inner:
            target.symlink_to(source, target_is_directory=True)
            continue
        target.mkdir(parents=True)  # a real folder: some sub-packages come from elsewhere
        for entry in source.iterdir():
            if entry.name not in inner and entry.name != "__pycache__":
                (target / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return dest


def driver_env(package_root: Path, work: Path) -> dict[str, str]:
    """The drivers' environment: mmcurate on the path, no hub, caches in `work`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(
        PYTHONPATH=str(package_root),
        HF_HOME=str(work / "hf"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        RAY_USAGE_STATS_ENABLED="0",
        OMP_NUM_THREADS="1",
    )
    return env


def run_driver(env: Path, driver: str, args: dict[str, Any], work: Path, package_root: Path) -> dict[str, Any]:
    """Run `tests/consumers/<driver>` with the consumers' python on `args`; its JSON result."""
    work.mkdir(parents=True, exist_ok=True)
    stem = Path(driver).stem
    args_path, result_path = work / f"{stem}-args.json", work / f"{stem}-result.json"
    args_path.write_text(json.dumps(args))
    result_path.unlink(missing_ok=True)
    cmd = [str(env_python(env)), str(DRIVERS / driver), str(args_path), str(result_path)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, cwd=work, env=driver_env(package_root, work), check=False
    )
    if proc.returncode != 0 or not result_path.is_file():
        raise AssertionError(f"{driver} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-8000:]}")
    return json.loads(result_path.read_text())
