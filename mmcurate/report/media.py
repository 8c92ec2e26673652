"""Thumbnails for the report: kept records from the run's shards, dropped ones re-read from their
sources (their media are not stored), clips as contact sheets of a few frames.

A kept record's media is its shard member (`KEY.jpg`, `KEY.mp4`, ...), found through the shard index
(one header read per shard). A dropped image is read again through the run's own units and read
settings (`units.json`, the manifest's `read`), joined by its place in the unit and checked against
its content id, as `mmcurate select` and `ocr --from-run` do; a dropped clip is decoded from its
source video at its start and end times. What cannot be read again gets no picture, and says why.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import fsspec
from PIL import Image

from mmcurate.annotation.client import shard_index
from mmcurate.stages.writers import join

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
THUMB = 200
"""Longest side of a thumbnail, pixels."""
MAX_PIXELS = 40_000_000
"""Larger images get no thumbnail (the report must not be the thing a decompression bomb takes down)."""


def thumbnail(data: bytes, size: int = THUMB) -> bytes:
    """A JPEG no larger than size x size of an encoded image (JPEGs decoded at a reduced size)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, never decoded
        im = Image.open(io.BytesIO(data))
    with im:
        if im.width * im.height > MAX_PIXELS:
            raise ValueError(f"{im.width}x{im.height} is past the report's {MAX_PIXELS} pixels")
        im.draft("RGB", (size, size))
        im = im.convert("RGB")
        im.thumbnail((size, size))
        out = io.BytesIO()
        im.save(out, "JPEG", quality=85)
        return out.getvalue()


def contact_sheet(frames: list[Image.Image], size: int = THUMB) -> bytes:
    """Frames side by side, each at most size x size: a clip at a glance."""
    small = []
    for f in frames:
        f = f.convert("RGB")
        f.thumbnail((size, size))
        small.append(f)
    sheet = Image.new("RGB", (sum(f.width for f in small) + 4 * (len(small) - 1), max(f.height for f in small)))
    x = 0
    for f in small:
        sheet.paste(f, (x, 0))
        x += f.width + 4
    out = io.BytesIO()
    sheet.save(out, "JPEG", quality=85)
    return out.getvalue()


def video_frames(
    data_or_path: bytes | str, start: float = 0.0, end: float | None = None, n: int = 3
) -> list[Image.Image]:
    """n frames evenly spread over [start, end) seconds of a video (PyAV decode, seeking to each)."""
    import av

    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else fsspec.open(data_or_path, "rb").open()
    try:
        with av.open(src) as container:
            stream = container.streams.video[0]
            length = end if end is not None else float(stream.duration * stream.time_base) if stream.duration else 0.0
            times = [start + (length - start) * (i + 0.5) / n for i in range(n)]
            out = []
            for t in times:
                container.seek(int(t / stream.time_base), stream=stream, backward=True, any_frame=False)
                for frame in container.decode(stream):
                    if frame.time is None or frame.time >= t - 1e-3:
                        out.append(frame.to_image())
                        break
            return out
    finally:
        src.close()


class Shards:
    """Members of a run's shards by name, each shard's headers read once."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._index: dict[str, dict[str, tuple[int, int]]] = {}

    def names(self, shard: str) -> dict[str, tuple[int, int]]:
        if shard not in self._index:
            self._index[shard] = shard_index(self.root, f"shards/{shard}")
        return self._index[shard]

    def read(self, shard: str, name: str) -> bytes | None:
        where = self.names(shard).get(name)
        if where is None:
            return None
        with fsspec.open(join(self.root, "shards", shard), "rb") as f:
            f.seek(where[0])
            return f.read(where[1])

    def media(self, shard: str, key: str) -> tuple[str, bytes] | None:
        """(extension, bytes) of the record's image or video member in the shard."""
        for ext in (*IMAGE_EXTS, "mp4"):
            data = self.read(shard, f"{key}.{ext}")
            if data is not None:
                return ext, data
        return None


def kept_picture(shards: Shards, row: Mapping[str, Any]) -> bytes | None:
    """A kept record's thumbnail (or a clip's contact sheet) from its shard member; None when it
    has none (a document sample, a member that does not decode)."""
    found = shards.media(str(row["shard"]), str(row["key"]))
    if found is None:
        return None
    ext, data = found
    try:
        if ext == "mp4":
            frames = video_frames(data)
            return contact_sheet(frames) if frames else None
        return thumbnail(data)
    except (OSError, ValueError, IndexError):
        return None


def reread_images(root: str, manifest: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> dict[str, bytes]:
    """Dropped images of a caption-style run read again from the sources: id -> thumbnail. Only rows
    whose re-read record has the same content id get one."""
    from mmcurate.pipelines.common import load_units
    from mmcurate.stages.readers import ReadParams, read_unit

    wanted: dict[int, dict[int, str]] = {}
    for row in rows:
        src = row.get("source") or {}
        wanted.setdefault(int(src.get("unit", 0)), {})[int(src.get("index", 0))] = str(row["id"])
    read = ReadParams(**{**(manifest.get("config", {}).get("read") or {}), "limit": None})
    out: dict[str, bytes] = {}
    for unit in load_units(root):
        places = wanted.get(unit.index)
        if not places:
            continue
        for rec in read_unit(unit, read):
            rid = places.get(rec.source.index)
            if rid is not None and rec.id == rid and rec.image:
                try:
                    out[rid] = thumbnail(rec.image)
                except (OSError, ValueError, Image.DecompressionBombError):
                    continue  # the bytes are there but no picture (a decode error, a bomb): listed without one
    return out


def reread_clip(row: Mapping[str, Any]) -> bytes | None:
    """A dropped clip's contact sheet, decoded from its source video (a file) at its times."""
    uri = str((row.get("source") or {}).get("uri", ""))
    if not uri or uri.endswith((".tar", ".tgz", ".tar.gz")):
        return None
    try:
        frames = video_frames(uri, float(row.get("start_time") or 0.0), float(row.get("end_time") or 0.0) or None)
    except (OSError, ValueError, IndexError) as exc:  # av.error.* derive from OSError / ValueError
        del exc
        return None
    return contact_sheet(frames) if frames else None


def sample_json(shards: Shards, row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The sample's `KEY.json` member (what a trainer reads beside the media), or None."""
    import json

    data = shards.read(str(row["shard"]), f"{row['key']}.json")
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


def boxed_picture(shards: Shards, row: Mapping[str, Any], meta: Mapping[str, Any]) -> tuple[bytes, list[str]] | None:
    """The stored image with its text lines' quads (OCR) or its regions' boxes (grounding) drawn,
    as stored in `KEY.json` (stored pixels), and their transcripts or expressions; None without any."""
    from PIL import ImageDraw

    shapes = [(ln.get("quad"), ln.get("text", "")) for ln in meta.get("lines") or [] if ln.get("quad")]
    shapes += [(r.get("box"), r.get("phrase", "")) for r in meta.get("regions") or [] if r.get("box")]
    found = shards.media(str(row["shard"]), str(row["key"]))
    if not shapes or found is None or found[0] == "mp4":
        return None
    try:
        with Image.open(io.BytesIO(found[1])) as im:
            im = im.convert("RGB")
            draw = ImageDraw.Draw(im)
            width = max(2, round(max(im.size) / 200))
            for shape, _ in shapes:
                if len(shape) == 4 and all(isinstance(v, int | float) for v in shape):
                    draw.rectangle([float(v) for v in shape], outline=(255, 40, 40), width=width)  # x0, y0, x1, y1
                else:
                    draw.polygon([(float(x), float(y)) for x, y in shape], outline=(255, 40, 40), width=width)
            out = io.BytesIO()
            im.save(out, "JPEG", quality=90)
    except (OSError, ValueError, TypeError):
        return None
    return thumbnail(out.getvalue(), 2 * THUMB), [str(t) for _, t in shapes]


def document_items(shards: Shards, row: Mapping[str, Any], meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An interleaved sample's items in order: text, or an image (its thumbnail bytes and slot)."""
    out: list[dict[str, Any]] = []
    for item in meta.get("items") or []:
        if item.get("type") == "image" and item.get("image"):
            data = shards.read(str(row["shard"]), f"{row['key']}.{item['image']}")
            slot = str(item["image"]).split(".", 1)[0]
            try:
                pic = thumbnail(data, THUMB) if data else None
            except (OSError, ValueError):
                pic = None
            out.append({"type": "image", "slot": int(slot) if slot.isdigit() else None, "data": pic})
        elif item.get("text"):
            out.append({"type": "text", "text": str(item["text"])})
    return out
