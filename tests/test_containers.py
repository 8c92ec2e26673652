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


def test_cpu_image_pins_sit_within_pyproject_and_constraints() -> None:
    """Every package pyproject names for the CPU extras is pinned, inside its range, at the
    constraints.txt pin where there is one. (Whether the lock is still this environment's closure is
    `containers/lock.py --check`: a maintainer's step after an upgrade, not a test a fresh install
    could fail by installing a newer patch release.)"""
    lock = _lock_module()
    pins = _lock(CONTAINERS / "cpu" / "requirements.lock")
    specs = _specs(lock.EXTRAS)
    named = set(specs) - lock.LEFT_OUT
    assert named <= set(pins), f"pyproject names these but the lock lacks them: {sorted(named - set(pins))}"
    outside = {n: (pins[n], [str(r.specifier) for r in rs]) for n, rs in specs.items() if n in pins
               for r in rs if not r.specifier.contains(pins[n], prereleases=True)}  # fmt: skip
    assert not outside, f"lock pins outside pyproject's ranges: {outside}"
    constraints = _constraints()
    assert {"torch", "apache-beam"} <= set(constraints)
    assert pins["torch"] in constraints["torch"].specifier
    assert not {"apache-beam", "opencv-python"} & set(pins)  # the base image's Beam; the GUI OpenCV never


def test_both_images_run_the_drivers_beam_version() -> None:
    beam = _constraints()["apache-beam"]
    installed = md.version("apache-beam")
    assert installed in beam.specifier  # make install honours constraints.txt
    for role in ("cpu", "gpu"):
        dockerfile = CONTAINERS / role / "Dockerfile"
        assert _beam_tag(dockerfile) in beam.specifier, (role, _beam_tag(dockerfile), str(beam))
        text = dockerfile.read_text()
        assert f"COPY containers/{role}/requirements.lock" in text and 'ENTRYPOINT ["/opt/apache/beam/boot"]' in text
        assert "pip install --no-cache-dir --no-deps /opt/mmcurate/mmcurate-*.whl" in text  # the wheel, not a checkout
        assert '"gcsfs==$FSSPEC_GCS"' in text  # gs:// inputs, outputs and weights (docs/cluster.md, Dataflow)


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


def _constraints() -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, _lines(REPO / "constraints.txt"))}


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
