"""Shared fixtures: real-world peer data (skipped when absent) and synthetic test images."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

# A CLI run writes its report unless told not to; only tests/test_report.py wants one (the rest would
# pay seconds of plotting per run and find a report/ folder in trees they compare file by file).
os.environ.setdefault("MMCURATE_REPORT", "0")

PEER_DATA = Path(__file__).resolve().parents[2] / "shared" / "peer-data"
"""Real media from other public projects; a fresh clone has no ../shared, so tests must skip then."""


@pytest.fixture(scope="session")
def peer_data() -> Path:
    """The peer-data folder, or a clean skip when this checkout has none."""
    if not PEER_DATA.is_dir():
        pytest.skip(f"peer data not available at {PEER_DATA}")
    return PEER_DATA


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that take `peer_data` carry the `peerdata` marker, so `-m "not peerdata"` deselects them."""
    for item in items:
        if "peer_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.peerdata)


def _photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A smooth random RGB image (upsampled noise): photo-like, so JPEGs are neither tiny nor trivial."""
    w, h = size
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(h // 16, 2), max(w // 16, 2), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def _to_bytes(img: Image.Image, fmt: str = "JPEG", **save: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


@pytest.fixture
def photo() -> Callable[..., Image.Image]:
    """Factory: photo((w, h), seed) -> a distinct, deterministic RGB image per seed."""
    return _photo


@pytest.fixture
def to_bytes() -> Callable[..., bytes]:
    """Factory: to_bytes(img, "PNG", **save_options) -> encoded bytes."""
    return _to_bytes
