"""The worker image recipes (containers/) cannot be built here (no registry, no Docker daemon, no
CUDA); what can be checked is that they install what the suite ran on: the CPU image's lock is this
environment's runtime closure of mmcurate's CPU extras within pyproject's ranges and constraints.txt's
pins, and both images start from Beam's SDK image of the Beam version the driver runs (a worker of
another Beam version cannot run the driver's pipeline)."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
CONTAINERS = REPO / "containers"


def _lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _specs(extras: tuple[str, ...]) -> dict[str, list[Requirement]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for e in extras for r in project["optional-dependencies"][e]]
    out: dict[str, list[Requirement]] = {}
    for r in reqs:
        out.setdefault(canonicalize_name(r.name), []).append(r)
    return out


def _lock_module():
    spec = importlib.util.spec_from_file_location("containers_lock", CONTAINERS / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _beam_tag(dockerfile: Path) -> str:
    (tag,) = set(re.findall(r"^ARG BEAM_VERSION=(\S+)$", dockerfile.read_text(), re.M))
    assert "FROM apache/beam_python3.11_sdk:${BEAM_VERSION}" in dockerfile.read_text()
    return tag


def test_cpu_image_pins_are_the_tested_environment_within_pyproject_and_constraints() -> None:
    lock = _lock_module()
    pins = _lock(CONTAINERS / "cpu" / "requirements.lock")
    specs = _specs(lock.EXTRAS)
    named = set(specs) - lock.LEFT_OUT
    assert named <= set(pins), f"pyproject names these but the lock lacks them: {sorted(named - set(pins))}"
    outside = {n: (pins[n], [str(r.specifier) for r in rs]) for n, rs in specs.items() if n in pins
               for r in rs if not r.specifier.contains(pins[n], prereleases=True)}  # fmt: skip
    assert not outside, f"lock pins outside pyproject's ranges: {outside}"
    constraints = {canonicalize_name(r.name): r for r in map(Requirement, _lines(REPO / "constraints.txt"))}
    assert constraints and all(pins[n] in c.specifier for n, c in constraints.items()), constraints
    # the lock is this environment's closure (containers/lock.py writes it; rerun it after an upgrade)
    current = {n: v.split("+")[0] for n, v in lock.closure().items()}
    differ = {n: (pins.get(n), v) for n, v in current.items() if pins.get(n) != v}
    assert not differ, f"rerun containers/lock.py: (lock, installed) = {differ}"
    assert set(pins) == set(current)


def test_both_images_run_the_drivers_beam_version() -> None:
    beam = md.version("apache-beam")
    assert _beam_tag(CONTAINERS / "cpu" / "Dockerfile") == beam
    assert _beam_tag(CONTAINERS / "gpu" / "Dockerfile") == beam
    for role in ("cpu", "gpu"):
        text = (CONTAINERS / role / "Dockerfile").read_text()
        assert f"COPY containers/{role}/requirements.lock" in text and 'ENTRYPOINT ["/opt/apache/beam/boot"]' in text
        assert "pip install --no-cache-dir --no-deps /opt/mmcurate/mmcurate-*.whl" in text  # the wheel, not a checkout


def test_gpu_image_pins_sit_in_pyproject_ranges() -> None:
    pins = _lock(CONTAINERS / "gpu" / "requirements.lock")
    specs = _specs(("models", "rl", "s3"))
    checked = [n for n in pins if n in specs]
    assert {"torch", "transformers", "open-clip-torch", "rapidocr"} <= set(checked)
    outside = {n: pins[n] for n in checked for r in specs[n] if not r.specifier.contains(pins[n])}
    assert not outside, outside
    assert (
        "vllm" in pins
        and "paddleocr" in pins
        and pins["torch"] != _lock(CONTAINERS / "cpu" / "requirements.lock")["torch"]
    )


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
