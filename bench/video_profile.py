"""video --profile: where scan's CPU time goes, step by step (its library calls clocked through patches)."""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock


class StepClock:
    """CPU seconds (process_time: every thread of the process) per step, exclusive: a step's time leaves
    out the timed steps it calls. `wrap` returns the timed version of a callable."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.calls: collections.Counter[str] = collections.Counter()
        self._inner: list[float] = []

    def wrap(self, fn: Callable[..., Any], name: str | Callable[[tuple, dict], str]) -> Callable[..., Any]:
        clock = time.process_time

        def timed_call(*a: Any, **k: Any) -> Any:
            self._inner.append(0.0)
            t0 = clock()
            try:
                return fn(*a, **k)
            finally:
                dt = clock() - t0
                inner = self._inner.pop()
                key = name if isinstance(name, str) else name(a, k)
                self.seconds[key] += dt - inner
                self.calls[key] += 1
                if self._inner:
                    self._inner[-1] += dt

        return timed_call


class _TimedFrame:
    """A decoded frame whose conversions are clocked; everything else goes to the frame itself."""

    __slots__ = ("_clock", "_frame")

    def __init__(self, frame: Any, clock: StepClock) -> None:
        self._frame, self._clock = frame, clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._frame, name)

    def to_ndarray(self, *a: Any, **k: Any) -> Any:
        key = f"frame.to_ndarray({k.get('format') or 'native'})"
        return self._clock.wrap(self._frame.to_ndarray, key)(*a, **k)

    def reformat(self, *a: Any, **k: Any) -> Any:
        return self._clock.wrap(self._frame.reformat, f"frame.reformat({k.get('format') or ''})")(*a, **k)


class _TimedReformatter:
    """A PyAV VideoReformatter (scan converts every frame through one) whose reformat() is clocked; it takes
    the clocked frames _TimedContainer yields and returns clocked frames."""

    def __init__(self, reformatter: Any, clock: StepClock) -> None:
        self._reformatter, self._clock = reformatter, clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reformatter, name)

    def reformat(self, frame: Any, *a: Any, **k: Any) -> Any:
        raw = frame._frame if isinstance(frame, _TimedFrame) else frame
        step = self._clock.wrap(self._reformatter.reformat, f"VideoReformatter.reformat({k.get('format') or ''})")
        return _TimedFrame(step(raw, *a, **k), self._clock)


class _TimedContainer:
    """A PyAV container whose decode() is clocked frame by frame ('decode': next() on PyAV's iterator)."""

    def __init__(self, container: Any, clock: StepClock) -> None:
        self._container, self._clock = container, clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def __enter__(self) -> _TimedContainer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._container.close()

    def decode(self, *a: Any, **k: Any) -> Iterator[Any]:
        frames = iter(self._container.decode(*a, **k))
        step = self._clock.wrap(lambda: next(frames, None), "decode (PyAV, libavcodec)")
        while (frame := step()) is not None:
            yield _TimedFrame(frame, self._clock)


def scan_breakdown(path: Path) -> dict[str, Any]:
    """Where scan's CPU time goes: stages.video_scan.scan itself (threads=1, default SceneParams and
    MotionParams), with the library calls it makes (PyAV decode and conversion, OpenCV, the detector,
    timecodes, the motion fit) clocked through patches. What no patch covers is scan's own Python, the
    freeing of each frame (with the swscale context PyAV's to_ndarray made for it) and the clocks' own cost
    (about 1 us per clocked call)."""
    import av
    import cv2
    import scenedetect
    from av.video import reformatter
    from scenedetect.detectors import content_detector

    from mmcurate.stages import video_scan

    clock = StepClock()
    codes = {getattr(cv2, n): n.removeprefix("COLOR_") for n in ("COLOR_BGR2HSV", "COLOR_BGR2GRAY", "COLOR_BGR2RGB")}

    def shape(a: Any) -> str:
        return f"{a.shape[1]}x{a.shape[0]}" if hasattr(a, "shape") else "?"

    def resize_name(a: tuple, k: dict) -> str:
        dsize = a[1] if len(a) > 1 else k.get("dsize")
        dst = f"{dsize[0]}x{dsize[1]}" if dsize else "?"
        return f"cv2.resize {shape(a[0])} -> {dst}"

    def cvt_name(a: tuple, k: dict) -> str:
        code = a[1] if len(a) > 1 else k.get("code")
        return f"cv2.cvtColor {codes.get(code, code)} {shape(a[0])}"

    real_make = video_scan.SceneParams.make

    def make(self: Any) -> Any:
        detector = real_make(self)
        detector.process_frame = clock.wrap(detector.process_frame, "detector: process_frame (Python)")
        detector.post_process = clock.wrap(detector.post_process, "detector: process_frame (Python)")
        return detector

    real_open, real_reformatter = av.open, reformatter.VideoReformatter
    patches = [
        mock.patch.object(av, "open", lambda *a, **k: _TimedContainer(real_open(*a, **k), clock)),
        # scan's `from av.video.reformatter import VideoReformatter`
        mock.patch.object(reformatter, "VideoReformatter", lambda: _TimedReformatter(real_reformatter(), clock)),
        mock.patch.object(cv2, "resize", clock.wrap(cv2.resize, resize_name)),
        mock.patch.object(cv2, "cvtColor", clock.wrap(cv2.cvtColor, cvt_name)),
        mock.patch.object(cv2, "split", clock.wrap(cv2.split, "cv2.split (detector)")),
        mock.patch.object(
            cv2, "calcOpticalFlowFarneback", clock.wrap(cv2.calcOpticalFlowFarneback, "cv2.calcOpticalFlowFarneback")
        ),
        mock.patch.object(
            content_detector,
            "_mean_pixel_distance",
            clock.wrap(content_detector._mean_pixel_distance, "detector: mean pixel distance (numpy)"),
        ),
        # scan's `from scenedetect import FrameTimecode` (Timecode stays: scenedetect checks isinstance on it)
        mock.patch.object(scenedetect, "FrameTimecode", clock.wrap(scenedetect.FrameTimecode, "FrameTimecode()")),
        mock.patch.object(video_scan, "similarity_fit", clock.wrap(video_scan.similarity_fit, "motion fit (numpy)")),
        mock.patch.object(video_scan.SceneParams, "make", make),
    ]
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        c0, w0 = time.process_time(), time.perf_counter()
        found = video_scan.scan(str(path), video_scan.SceneParams(), video_scan.MotionParams(), threads=1)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    seconds = dict(sorted(clock.seconds.items(), key=lambda kv: -kv[1]))
    seconds["unclocked: scan's Python, freeing frames, clocks"] = cpu - sum(seconds.values())
    n = found.frames
    return {
        "frames": n,
        "flow_pairs": len(found.pairs),
        "working_size": list(found.working_size),
        "wall_s": wall,
        "cpu_s": cpu,
        "cuts": found.cuts,
        "cpu_seconds": seconds,
        "calls": dict(clock.calls),
        "ms_per_frame": {key: v * 1e3 / max(n, 1) for key, v in seconds.items()},
    }
