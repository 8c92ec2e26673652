"""Write containers/cpu/requirements.lock: the runtime closure of mmcurate's CPU worker extras, each
pinned at the version installed in this environment (the one the test suite ran on).

    .venv/bin/python containers/lock.py          # rewrite the lock
    .venv/bin/python containers/lock.py --check  # exit 1 when the lock differs from this environment

apache-beam is left out (the base image, apache/beam_python3.11_sdk:VERSION, brings it: its version
is the image tag, checked by tests/test_containers.py), and so is mmcurate itself (its wheel is
installed with --no-deps on top). torch is the CPU build (PyTorch's CPU index, see the Dockerfile).
"""

from __future__ import annotations

import importlib.metadata as md
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

EXTRAS = ("models", "video", "interleaved", "ocr", "rl", "s3")
"""What a CPU worker runs: every corpus's stages on CPU, S3. Not: tests, annotate, paddle; gcs (gcsfs is not
installed where the suite runs, so it has no tested pin: add `gcsfs` to the image for gs://)."""
LEFT_OUT = {"apache-beam", "mmcurate", "opencv-python"}
"""The base image's Beam; our own wheel; the GUI OpenCV scenedetect asks for (the headless build
provides the same cv2 module; the Dockerfile removes the GUI one)."""
LOCK = Path(__file__).with_name("cpu") / "requirements.lock"


def _wanted(req: Requirement, extras: tuple[str, ...]) -> bool:
    if req.marker is None:
        return True
    env = default_environment()
    return any(req.marker.evaluate({**env, "extra": e}) for e in extras or ("",))


def closure(root: str = "mmcurate", extras: tuple[str, ...] = EXTRAS) -> dict[str, str]:
    """{distribution: installed version} of everything `root[extras]` needs at run time."""
    pins: dict[str, str] = {}
    todo: list[tuple[str, tuple[str, ...]]] = [(root, extras)]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while todo:
        name, want = todo.pop()
        if (name, want) in seen:
            continue
        seen.add((name, want))
        dist = md.distribution(name)
        pins[canonicalize_name(dist.metadata["Name"])] = dist.version
        for line in dist.requires or ():
            req = Requirement(line)
            if _wanted(req, want) and canonicalize_name(req.name) not in LEFT_OUT:
                todo.append((req.name, tuple(sorted(req.extras))))
    return {k: v for k, v in sorted(pins.items()) if k not in LEFT_OUT}


def render(pins: dict[str, str]) -> str:
    head = ["# Written by containers/lock.py from the environment the test suite ran on; do not edit.",
            f"# mmcurate[{','.join(EXTRAS)}] runtime closure; apache-beam comes from the base image."]  # fmt: skip
    return "\n".join([*head, *(f"{k}=={v.split('+')[0]}" for k, v in pins.items())]) + "\n"


def main(argv: list[str]) -> int:
    text = render(closure())
    if "--check" in argv:
        same = LOCK.exists() and LOCK.read_text() == text
        print("lock matches this environment" if same else f"{LOCK} differs from this environment")
        return 0 if same else 1
    LOCK.write_text(text)
    print(f"wrote {LOCK} ({text.count(chr(10)) - 2} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
