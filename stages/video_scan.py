"""One sequential decode of a video for scene cuts (PySceneDetect) and motion (Farneback optical flow).

Frames are decoded once, in order (seeking per sampled frame costs more than decoding through), and
reduced at once to the small frame PySceneDetect's SceneManager would analyse (long side about 256
px, `cv2.resize` linear): the scene detector sees exactly what it sees inside `detect()`, so its
goldens hold. Every `fps / sample_fps`-th luma plane goes to Farneback; each flow field is reduced
at once to a handful of numbers (mean magnitude and a global similarity fit: translation, zoom,
rotation), so memory stays flat however long the video (Data-Juicer stacks whole flow fields).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from .base import Params
from .video_motion import DataJuicerMotion
from .video_stitch import BoundaryFrames, StitchParams

DETECTORS = ("content", "adaptive")


class SceneParams(Params):
    """PySceneDetect's detectors, at PySceneDetect's defaults unless set."""

    detector: Literal["content", "adaptive"] = "content"
    threshold: float | None = None
    """ContentDetector `threshold` (default 27) or AdaptiveDetector `adaptive_threshold` (default 3)."""
    min_scene_len: int = 15
    """Frames; PySceneDetect's default, as Data-Juicer and video2dataset use."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Any other keyword of the detector (e.g. `weights`, `luma_only`, `window_width`, `min_content_val`)."""
    downscale: int | None = Field(None, ge=1)
    """PySceneDetect's `SceneManager.downscale`: the detector sees frames divided by this (rounded
    as PySceneDetect rounds, linear resize); None: its auto downscale (to about 256 px wide)."""
    frame_skip: int = Field(0, ge=0)
    """PySceneDetect's `detect_scenes(frame_skip=N)`: the detector sees every (N+1)-th frame (motion
    still sees every sampled frame). Its documentation advises it only for very high frame rates."""
    downscale_width: int | None = Field(None, ge=1)
    """video2dataset's `CutDetectionSubsampler` downscale: the factor is the frame width // this
    (its DEFAULT_MIN_WIDTH 64; a factor under 2 leaves frames as they are). Overrides `downscale`."""
    target_fps: float | None = Field(None, gt=0)
    """video2dataset's `framerates` entry: `frame_skip` = max(int(fps // target_fps) - 1, 0), at
    PySceneDetect's auto downscale, as its `cuts_<fps>` are found. Overrides `frame_skip`."""
    resize: Literal["exact", "decoder"] = "exact"
    """`exact`: the detector sees what PySceneDetect's SceneManager hands it (the full BGR frame,
    `cv2.resize` linear), so its cuts are PySceneDetect's own. `decoder`: swscale scales while it
    converts colour (fast bilinear), about a third less CPU per frame; cuts measured against exact in
    docs/video.md ("Speed")."""
    stitch: StitchParams = StitchParams()
    """Scene stitching (`stages/video_stitch.py`): a cut whose boundary frames show the same shot (a
    flash, a fast movement) is removed; off by default."""

    def factor(self, width: int) -> int | None:
        """The downscale factor for frames `width` wide (None: PySceneDetect's auto downscale)."""
        return width // self.downscale_width if self.downscale_width else self.downscale

    def skip(self, fps: float) -> int:
        """Frames the detector skips after each one it sees."""
        return max(int(fps // self.target_fps) - 1, 0) if self.target_fps else self.frame_skip

    @model_validator(mode="after")
    def _build(self) -> SceneParams:
        try:
            self.make()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"scenes: {self.detector} detector rejects these settings: {exc}") from None
        return self

    def make(self) -> Any:
        """The detector; its frame score computed by `_FastScore` when that is provably the same number."""
        from scenedetect import AdaptiveDetector, ContentDetector

        kwargs = dict(self.options, min_scene_len=self.min_scene_len)
        if self.detector == "content":
            if self.threshold is not None:
                kwargs["threshold"] = self.threshold
            cls: type = ContentDetector
        else:
            if self.threshold is not None:
                kwargs["adaptive_threshold"] = self.threshold
            cls = AdaptiveDetector
        detector = cls(**kwargs)
        if detector._weights.delta_edges == 0 and detector.stats_manager is None:
            fast = _fast_class(cls)
            detector = fast(**kwargs)
        return detector


class _FastScore:
    """PySceneDetect's content score in three OpenCV calls instead of split + three numpy passes.

    `ContentDetector._calculate_frame_score` averages |HSV(frame) - HSV(previous)| per channel over the
    pixels and weights the channels; on uint8 frames `cv2.absdiff` + `cv2.sumElems` give the same
    integer sums, so the score is bit-identical (checked on every frame of the benchmark inputs, and
    the goldens test runs through it). Only used without edge weights and without a stats manager.
    """

    _last_hsv: np.ndarray | None = None

    def _calculate_frame_score(self, timecode: Any, frame_img: np.ndarray) -> float:
        import cv2

        hsv = cv2.cvtColor(frame_img, cv2.COLOR_BGR2HSV)
        last, self._last_hsv = self._last_hsv, hsv
        if last is None:
            return 0.0
        sums = cv2.sumElems(cv2.absdiff(hsv, last))
        pixels = float(hsv.shape[0] * hsv.shape[1])
        weights = self._weights  # type: ignore[attr-defined]
        parts = (sums[0] / pixels, sums[1] / pixels, sums[2] / pixels, 0.0)
        return sum(p * w for p, w in zip(parts, weights, strict=True)) / sum(abs(w) for w in weights)


_FAST: dict[type, type] = {}


def _fast_class(cls: type) -> type:
    if cls not in _FAST:
        _FAST[cls] = type(f"Fast{cls.__name__}", (_FastScore, cls), {})
    return _FAST[cls]


class MotionParams(Params):
    method: Literal["fast", "datajuicer"] = "fast"
    """What else is measured besides the fast flow. Every clip gets `flow_speed` (ours: Farneback on a
    `flow_side` frame between a sampled frame and the next one, in frame diagonals per second; one
    decode with the scene detection) and the camera-motion scores and label from the same flow.
    `datajuicer` adds `motion` / `motion_max`: Data-Juicer's `video_motion_score_filter` score
    exactly (`stages/video_motion.py`: full-size Farneback between frames 1 / `sample_fps` apart, in
    pixels of its resized frame; a second decode), the number its `min_score` 0.25 means."""
    datajuicer: DataJuicerMotion = DataJuicerMotion()
    """Data-Juicer's frame-size options for `method: datajuicer` (`size`, `max_size`, `divisible`, `relative`)."""
    sample_fps: float = Field(2.0, gt=0)
    """Flow samples per second of video (Data-Juicer's motion filter samples at 2 fps)."""
    static_speed: float = Field(0.02, ge=0)
    """Camera speed (share of the frame per second) below which a clip is `static`."""
    flow_gap: int = Field(1, ge=1)
    """Flow between a sampled frame and the frame this many frames later: small steps keep Farneback
    inside its range (on the ~256 px analysis frame its pyramid stops at 3 levels, about 30 px)."""
    flow_side: int = Field(128, ge=16)
    """Long side of the frames Farneback sees: about 1.8 ms a flow here, and accurate for pans of up
    to about a frame width per second."""
    grid_step: int = Field(2, ge=1)
    """Every n-th flow vector enters the global motion fit."""


@dataclasses.dataclass
class Scan:
    frames: int
    """Frames decoded."""
    times: np.ndarray
    """Presentation time of each decoded frame, seconds from the first frame."""
    cuts: list[int]
    """Decoded-frame indices that start a new scene."""
    cut_frame_numbers: list[int]
    """The same cuts as PySceneDetect numbers frames (PTS x fps: differs from decode order in VFR)."""
    pairs: np.ndarray
    """One row per flow sample: frame a, frame b, seconds apart, mean flow magnitude (display px),
    translation x, y (share of frame width/height, stored axes), zoom and rotation (per pair)."""
    vfr: bool
    working_size: tuple[int, int]
    stitched: list[int] = dataclasses.field(default_factory=list)
    """Detector cuts removed by scene stitching (decoded-frame indices; `cuts` holds the others)."""
    cut_similarity: list[float] = dataclasses.field(default_factory=list)
    """Stitching's similarity at each detector cut (`sorted(cuts + stitched)`); empty when it is off."""


PAIR_COLUMNS = ("a", "b", "dt", "magnitude", "tx", "ty", "zoom", "rotation")


def working_size(width: int, height: int, downscale: int | None = None) -> tuple[int, int]:
    """The frame size PySceneDetect's SceneManager analyses: auto downscale to about 256 px, or
    `downscale` when given (1: full size)."""
    from scenedetect.scene_manager import compute_downscale_factor

    factor = compute_downscale_factor(max(width, height)) if downscale is None else downscale
    if factor <= 1:  # PySceneDetect resizes only for a factor above 1 (video2dataset's width // 64 may be 0)
        return width, height
    return max(1, round(width / factor)), max(1, round(height / factor))


def similarity_fit(u: np.ndarray, v: np.ndarray) -> tuple[float, float, float, float]:
    """Least-squares global motion u = tx + a x - b y, v = ty + b x + a y on centred pixel coordinates.

    On a full centred grid the normal equations separate: translation is the mean flow, `a` (zoom: the
    relative scale change) and `b` (rotation, radians) are projections on the radial and tangential
    fields.
    """
    h, w = u.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x -= x.mean()
    y -= y.mean()
    tx, ty = float(u.mean()), float(v.mean())
    norm = float((x * x + y * y).sum()) or 1.0
    a = float(((u - tx) * x + (v - ty) * y).sum()) / norm
    b = float(((v - ty) * x - (u - tx) * y).sum()) / norm
    return tx, ty, a, b


def _analysis_frame(frame: Any, size: tuple[int, int], reformatter: Any, resize: str = "exact") -> np.ndarray:
    """The BGR frame PySceneDetect's SceneManager would hand its detector (full decode, linear resize);
    with `resize: decoder`, swscale's fast bilinear scaling inside the colour conversion instead.

    One reformatter, one thread: PyAV's `to_ndarray(format=...)` builds a converter with an automatic
    thread pool per frame, which cost more than the conversion itself."""
    import cv2

    if resize == "decoder" and size != (frame.width, frame.height):
        w, h = size
        return reformatter.reformat(frame, w, h, "bgr24", interpolation="FAST_BILINEAR", threads=1).to_ndarray()
    bgr = reformatter.reformat(frame, format="bgr24", threads=1).to_ndarray()
    return cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR) if size != (bgr.shape[1], bgr.shape[0]) else bgr


def _flow_frame(small: np.ndarray, side: int) -> np.ndarray:
    import cv2

    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    f = side / max(w, h)
    if f >= 1:
        return gray
    return cv2.resize(gray, (max(8, round(w * f)), max(8, round(h * f))), interpolation=cv2.INTER_AREA)


def scan(path: str, scenes: SceneParams, motion: MotionParams, threads: int = 1) -> Scan:
    """Decode `path` once; return its cuts and per-sample flow statistics."""
    import av
    import cv2
    from av.video.reformatter import VideoReformatter
    from scenedetect import FrameTimecode
    from scenedetect.common import Timecode

    detector = scenes.make()
    reformatter = VideoReformatter()
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # one video per core: OpenCV's pool only adds hand-offs on 128 px flows
    container = av.open(path, metadata_errors="ignore")
    try:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = threads
        stream.thread_type = "AUTO" if threads != 1 else "SLICE"
        rate = Fraction(stream.guessed_rate or stream.average_rate or 25)
        width, height = stream.codec_context.width, stream.codec_context.height
        size = working_size(width, height, scenes.factor(width))
        skip = scenes.skip(float(rate))
        sar = float(stream.sample_aspect_ratio or 1)
        flow_w, flow_h = _flow_frame(np.zeros((size[1], size[0], 3), np.uint8), motion.flow_side).shape[::-1]
        scale = np.array([width * sar / flow_w, height / flow_h], dtype=np.float32)  # flow px -> display px
        step = max(1, round(float(rate) / motion.sample_fps))
        gap = min(motion.flow_gap, step)
        lag = (getattr(detector, "event_buffer_length", 0) + scenes.min_scene_len + 2) * (skip + 1) + 16
        keep = BoundaryFrames(scenes.stitch, float(rate), lag) if scenes.stitch.enabled else None
        times: list[float] = []
        cut_tcs: list[Any] = []
        pairs: list[tuple[float, ...]] = []
        prev: tuple[int, float, np.ndarray] | None = None
        first_pts = None
        tc = FrameTimecode(0, rate)
        n = 0
        raw_tb, tb = None, 1 / rate
        for frame in container.decode(stream):
            if frame.pts is None:
                pts, tb = n, 1 / rate
            else:
                if first_pts is None:
                    first_pts = frame.pts
                pts = frame.pts - first_pts
                if frame.time_base != raw_tb:
                    raw_tb, tb = frame.time_base, Fraction(frame.time_base)
            t = float(pts * tb)
            seen = n % (skip + 1) == 0  # PySceneDetect's frame_skip: the detector sees these only
            flow_due = n % step == 0 or (prev is not None and n == prev[0] + gap)
            # a frame nothing looks at (frame_skip) is decoded, never converted
            small = (
                _analysis_frame(frame, size, reformatter, scenes.resize)
                if seen or flow_due or keep is not None
                else None
            )
            tc = FrameTimecode(Timecode(pts=pts, time_base=tb), fps=rate)
            if seen:
                cut_tcs += detector.process_frame(tc, small)
            if prev is not None and n == prev[0] + gap:
                luma = _flow_frame(small, motion.flow_side)
                flow = cv2.calcOpticalFlowFarneback(prev[2], luma, None, 0.5, 3, 15, 3, 5, 1.2, 0)
                g = motion.grid_step
                u, v = flow[::g, ::g, 0], flow[::g, ::g, 1]
                mag = float(np.sqrt((u * scale[0]) ** 2 + (v * scale[1]) ** 2).mean())
                tx, ty, a, b = similarity_fit(u, v)
                fw, fh = luma.shape[1], luma.shape[0]
                pairs.append((prev[0], n, t - prev[1], mag, tx / fw, ty / fh, a, b))
                prev = None
            if n % step == 0:
                prev = (n, t, _flow_frame(small, motion.flow_side))
            times.append(t)
            if keep is not None:
                keep.add(n, small, times, cut_tcs)
            n += 1
        cut_tcs += detector.post_process(tc)
    finally:
        container.close()
        cv2.setNumThreads(cv_threads)
    numbers = sorted({c.frame_num for c in cut_tcs})
    # A cut is the timecode of the frame that starts the new scene: find that frame by its time.
    seconds = np.asarray(times)
    cuts = sorted({int(np.searchsorted(seconds, c.seconds - 1e-9)) for c in cut_tcs} - {0, n})
    deltas = np.diff(np.asarray(times)) if len(times) > 1 else np.zeros(0)
    vfr = bool(len(deltas) and deltas.min() > 0 and deltas.max() / deltas.min() > 1.5)
    cuts, stitched, similarity = keep.stitch(cuts, n) if keep is not None else (cuts, [], [])
    return Scan(
        frames=n,
        times=np.asarray(times, dtype=np.float64),
        cuts=cuts,
        cut_frame_numbers=numbers,
        pairs=np.asarray(pairs, dtype=np.float64).reshape(-1, len(PAIR_COLUMNS)),
        vfr=vfr,
        working_size=size,
        stitched=stitched,
        cut_similarity=similarity,
    )


CAMERA_LABELS = ("static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out")


def _to_display(tx: float, ty: float, rotation: int) -> tuple[float, float]:
    """A translation in stored-frame axes, in the axes of the upright frame (rotated clockwise)."""
    return {0: (tx, ty), 90: (-ty, tx), 180: (-tx, -ty), 270: (ty, -tx)}[rotation]


CLIP_MOTION_SCORES = ("flow_speed", "flow_speed_max", "camera_pan", "camera_tilt", "camera_zoom")
"""The fast flow's scores, on every clip whatever `motion.method` (Data-Juicer's adds `motion`, `motion_max`)."""
CLIP_MOTION_LABELS = ("camera_motion",)
DATAJUICER_SCORES = ("motion", "motion_max")


def clip_motion(pairs: np.ndarray, start: int, end: int, rotation: int, params: MotionParams, diagonal: float):
    """Motion scores and the camera-motion guess of frames [start, end), from flow pairs inside it;
    `diagonal`: the display frame's diagonal in pixels (the unit of `flow_speed`)."""
    inside = pairs[(pairs[:, 0] >= start) & (pairs[:, 1] < end)] if len(pairs) else pairs
    if not len(inside):
        return {}, {}
    dt = np.maximum(inside[:, 2], 1e-6)
    tx, ty = float((inside[:, 4] / dt).mean()), float((inside[:, 5] / dt).mean())
    tx, ty = _to_display(tx, ty, rotation)
    zoom = float((inside[:, 6] / dt).mean())
    # Speed in frame diagonals per second: the same number for the same motion at 360p and at 4K.
    moved = inside[:, 3] / dt / diagonal
    scores = {
        "flow_speed": float(moved.mean()),
        "flow_speed_max": float(moved.max()),
        "camera_pan": tx,
        "camera_tilt": ty,
        "camera_zoom": zoom,
    }
    # A zoom moves points at mid-radius (about a quarter of the frame from the centre) by zoom / 4.
    speeds = {"pan": abs(tx), "tilt": abs(ty), "zoom": abs(zoom) / 4}
    kind = max(speeds, key=lambda k: speeds[k])
    if speeds[kind] < params.static_speed:
        label = "static"
    elif kind == "pan":
        label = "pan_left" if tx > 0 else "pan_right"  # content sliding right = camera turning left
    elif kind == "tilt":
        label = "tilt_up" if ty > 0 else "tilt_down"  # content sliding down = camera tilting up
    else:
        label = "zoom_in" if zoom > 0 else "zoom_out"
    return scores, {"camera_motion": label}
