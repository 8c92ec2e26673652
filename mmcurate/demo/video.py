"""Videos with known truth, made by FFmpeg: cuts at given frames, camera pans/tilts/zooms, text overlays.

Used by `make video` without INPUT (the demo video corpus), by the tests (cut frames, camera-motion
labels and text presence are known by construction) and by the benchmark. Each segment is one
FFmpeg source; segments are concatenated, so a cut falls exactly on a segment boundary.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


@dataclasses.dataclass(frozen=True)
class Segment:
    """`kind`: a lavfi source (testsrc2, smptebars, mandelbrot, rgbtestsrc, ...), or a camera move over a
    still texture: static, pan_left, pan_right, tilt_up, tilt_down, zoom_in, zoom_out."""

    kind: str
    frames: int
    text: str = ""
    seed: int = 0


CAMERA = ("static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out")


def texture(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A still with structure at every scale (blurred noise octaves, colour): optical flow locks onto it."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    for scale in (2, 8, 32):
        small = rng.random((max(2, height // scale), max(2, width // scale), 3)).astype(np.float32)
        img += cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR) * scale
    img = (img - img.min()) / (img.max() - img.min()) * 255
    cv2.imwrite(str(path), img.astype(np.uint8))
    return path


def _camera_filter(kind: str, w: int, h: int, speed: int, fps: int) -> str:
    """Crop a (3w x 3h) still with a moving window: the camera moves, the world stands still."""
    cx, cy = w, h  # window top-left at rest: the centre of the 3w x 3h texture
    if kind == "static":
        return f"crop={w}:{h}:{cx}:{cy}"
    if kind in ("pan_left", "pan_right"):
        sign = "-" if kind == "pan_left" else "+"  # camera turning left: the window moves left
        return f"crop={w}:{h}:x='{cx}{sign}{speed}*n':y={cy}"
    if kind in ("tilt_up", "tilt_down"):
        sign = "-" if kind == "tilt_up" else "+"
        return f"crop={w}:{h}:x={cx}:y='{cy}{sign}{speed}*n'"
    rate = 0.001 * speed
    # zoompan crops a window of (texture / zoom) around the centre and scales it to w x h
    z = f"1+{rate}*on" if kind == "zoom_in" else f"1.6-{rate}*on"
    return f"zoompan=z='{z}':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':d=1:s={w}x{h}:fps={fps}"


def make_video(
    path: str | Path,
    segments: list[Segment],
    size: tuple[int, int] = (640, 360),
    fps: int = 30,
    speed: int = 4,
    ffmpeg: str = "ffmpeg",
    crf: int = 23,
) -> list[int]:
    """Write an H.264 MP4 of the segments back to back; return the frames where segments start (cuts)."""
    if shutil.which(ffmpeg) is None:
        raise FileNotFoundError(f"{ffmpeg} not found: install FFmpeg (`make ffmpeg`)")
    path = Path(path)
    w, h = size
    inputs: list[str] = []
    chains: list[str] = []
    for i, seg in enumerate(segments):
        if seg.kind in CAMERA:
            still = texture(path.with_name(f".{path.stem}-tex{i}.png"), 3 * w, 3 * h, seed=seg.seed + i)
            inputs += ["-loop", "1", "-framerate", str(fps), "-i", str(still)]
            vf = _camera_filter(seg.kind, w, h, speed, fps)
        else:
            inputs += ["-f", "lavfi", "-i", f"{seg.kind}=size={w}x{h}:rate={fps}"]
            vf = "null"
        if seg.text:
            vf += (
                f",drawtext=fontfile={FONT}:text='{seg.text}':fontsize={h // 8}:fontcolor=white"
                ":box=1:boxcolor=black@0.8:boxborderw=10:x=(w-text_w)/2:y=h-2*text_h"
            )
        chains.append(
            f"[{i}:v]{vf},scale={w}:{h},setsar=1,format=yuv420p,trim=end_frame={seg.frames},setpts=PTS-STARTPTS[v{i}]"
        )
    graph = ";".join(chains) + ";" + "".join(f"[v{i}]" for i in range(len(segments)))
    graph += f"concat=n={len(segments)}:v=1:a=0[out]"
    args = [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *inputs,
        "-filter_complex", graph, "-map", "[out]", "-r", str(fps),
        "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p", str(path),
    ]  # fmt: skip
    try:
        subprocess.run(args, check=True, capture_output=True, timeout=600)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"ffmpeg failed: {exc.stderr.decode('utf-8', 'replace')[-1500:]}") from None
    finally:
        for tex in path.parent.glob(f".{path.stem}-tex*.png"):
            tex.unlink()
    starts, n = [], 0
    for seg in segments:
        starts.append(n)
        n += seg.frames
    return starts[1:]


def build_corpus(root: str | Path) -> Path:
    """The demo video corpus: scene cuts, each camera move, in-scene text, and inputs that must not pass."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    make_video(root / "cuts.mp4", [Segment("testsrc2", 90), Segment("smptebars", 75), Segment("mandelbrot", 120)])
    (root / "cuts.txt").write_text("test patterns and a fractal zoom, cut at frames 90 and 165\n")
    make_video(
        root / "camera.mp4",
        [Segment(k, 75, seed=i) for i, k in enumerate(("pan_left", "tilt_down", "zoom_in", "static"))],
    )
    (root / "camera.txt").write_text("a camera panning left, tilting down, zooming in, then holding still\n")
    make_video(root / "title.mp4", [Segment("pan_right", 90, text="CHAPTER ONE"), Segment("zoom_out", 90)])
    (root / "title.txt").write_text("a title card over a moving shot\n")
    make_video(root / "short.mp4", [Segment("testsrc2", 30)])  # one second: no clip long enough
    (root / "not-a-video.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(200))  # header only
    return root
