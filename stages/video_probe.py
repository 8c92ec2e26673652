"""Probe a video: decord for what a trainer's reader sees (frame count, fps, upright size), PyAV for
what decord does not report (rotation, sample aspect ratio, variable frame rate, start offset, audio).

Every container and reader is closed before returning (Data-Juicer #369 leaked PyAV containers).
A file that is no video, has no video stream, no duration or no decodable first frame raises
`VideoBroken` with a reason code; the pipeline quarantines it with the message.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

IMAGE_FORMATS = ("image2", "jpeg_pipe", "png_pipe", "webp_pipe", "gif", "bmp_pipe", "tiff_pipe", "mjpeg")


class VideoBroken(Exception):
    """The video cannot be used; `reason` is the quarantine reason code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple:  # crosses the process boundary from the decoding child
        return (VideoBroken, (self.reason, str(self)))


def rotation_cw(display_rotation: float) -> int:
    """FFmpeg's display-matrix angle (counter-clockwise) -> degrees clockwise to turn frames upright."""
    return round(-display_rotation / 90.0) * 90 % 360


def display_size(width: int, height: int, sar: Fraction, rotation: int) -> tuple[int, int]:
    """Upright size with square pixels, as FFmpeg's `scale=iw*sar:ih` plus autorotate gives it."""
    w = max(1, round(width * sar)) if sar > 0 else width
    w -= w % 2  # what H.264 output can hold
    h = height - height % 2
    return (h, w) if rotation in (90, 270) else (w, h)


def _fraction(value: Any) -> Fraction:
    if not value:
        return Fraction(0)
    return Fraction(int(value.numerator), int(value.denominator))


def _video_stream(container: Any) -> Any:
    """The first video stream of an open container; VideoBroken for no stream or a still image."""
    fmt = container.format.name
    if not container.streams.video:
        raise VideoBroken("no_video_stream", f"{fmt} container without a video stream")
    stream = container.streams.video[0]
    still_codec = stream.codec_context.name in ("mjpeg", "png", "webp", "bmp") and (stream.frames or 0) <= 1
    if fmt in IMAGE_FORMATS or still_codec:
        raise VideoBroken("not_a_video", f"a still image ({fmt}, {stream.codec_context.name}), not a video")
    return stream


def _first_frame(container: Any, stream: Any) -> Any:
    import av

    try:
        return next(container.decode(stream))
    except StopIteration:
        raise VideoBroken("undecodable", "no frame could be decoded") from None
    except av.FFmpegError as exc:
        raise VideoBroken("undecodable", f"first frame: {type(exc).__name__}: {exc}") from None


def _stream_facts(container: Any) -> dict[str, Any]:
    """What PyAV says of the container and its first video stream (and first frame)."""
    stream = _video_stream(container)
    cc = stream.codec_context
    tb = _fraction(stream.time_base)
    stream_duration = float(stream.duration * tb) if stream.duration else 0.0
    container_duration = (container.duration or 0) / 1e6
    duration = stream_duration or container_duration
    guessed, avg = _fraction(stream.guessed_rate), _fraction(stream.average_rate)
    sar = _fraction(stream.sample_aspect_ratio) or Fraction(1)
    first = _first_frame(container, stream)
    rotation = rotation_cw(getattr(first, "rotation", 0) or 0)
    start = float(first.pts * first.time_base) if first.pts is not None and first.time_base else 0.0
    audio = container.streams.audio
    facts = {
        "container": container.format.name,
        "codec": cc.name,
        "width": cc.width,
        "height": cc.height,
        "rotation": rotation,
        "sar": f"{sar.numerator}:{sar.denominator}",
        "fps": float(guessed or avg),
        "avg_fps": float(avg or guessed),
        "vfr": bool(guessed and avg and abs(float(guessed - avg)) > 0.01 * float(guessed)),
        "duration": duration,
        "stream_duration": stream_duration,
        "container_duration": container_duration,
        "start_time": start,
        "container_start": (container.start_time or 0) / 1e6 if container.start_time is not None else start,
        "has_audio": bool(audio),
        "audio_codec": audio[0].codec_context.name if audio else "",
    }
    facts["display_width"], facts["display_height"] = display_size(cc.width, cc.height, sar, rotation)
    return facts


def _frame_count(path: str, facts: dict[str, Any]) -> None:
    """Frames as decord indexes them (what a trainer's reader sees), into `facts`."""
    import decord

    try:
        reader = decord.VideoReader(path, num_threads=1)
    except Exception as exc:  # decord raises its own DECORDError (a RuntimeError)
        # Streamed WebM/MKV (no index, no duration) defeats decord but not FFmpeg; the clips we write
        # are ordinary MP4s, so count the frames by demuxing instead.
        facts["frames"], last = _demux_count(path)
        if facts["frames"] == 0:
            raise VideoBroken("undecodable", f"decord: {type(exc).__name__}: {str(exc)[:500]}") from None
        if facts["duration"] <= 0 and last is not None:
            facts["duration"] = last - facts["start_time"] + 1.0 / (facts["fps"] or 25.0)
        return
    try:
        facts["frames"] = len(reader)
    finally:
        del reader


def probe(path: str) -> dict[str, Any]:
    """Facts about the video at `path` (a local file), named as `VideoRecord` fields."""
    import av

    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoBroken("undecodable", f"cannot open: {type(exc).__name__}: {exc}") from None
    try:
        facts = _stream_facts(container)
    except av.FFmpegError as exc:
        raise VideoBroken("undecodable", f"{type(exc).__name__}: {exc}") from None
    finally:
        container.close()
    _frame_count(path, facts)
    if facts["frames"] < 2:
        raise VideoBroken("too_few_frames", f"{facts['frames']} frame(s): not a video")
    if facts["duration"] <= 0 and facts["fps"] > 0:  # streamed WebM/MKV: no duration in the header
        facts["duration"] = facts["frames"] / facts["fps"]
    if facts["duration"] <= 0:
        raise VideoBroken("zero_duration", f"{facts['container']} video stream has no duration")
    return facts


def _demux_count(path: str) -> tuple[int, float | None]:
    """(video packets, presentation time of the last one in seconds) without decoding."""
    import av

    n, last = 0, None
    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            n += 1
            if packet.pts is not None:
                t = float(packet.pts * packet.time_base)
                last = t if last is None else max(last, t)
    return n, last
