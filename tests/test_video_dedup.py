"""Clip dedup across videos: fingerprints (frame hash, perceptual hash with crops) made by FFmpeg-cut
clips, the probes in the run-wide near pass, and a pipeline run over copies of one video."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmcurate.demo.video import FONT, Segment, make_video
from mmcurate.pipelines.video import CORPUS, VideoDedupParams, clip_frames, drop_frames
from mmcurate.schemas import ClipRecord, DedupKey, Source
from mmcurate.stages.dedup import near_duplicates, near_entries, near_in_band
from mmcurate.stages.video_clips import sample_frames
from mmcurate.stages.video_dedup import fingerprint, frame_indices, near_distance

DEFAULT = VideoDedupParams().max_distance


def _ffmpeg(src: Path, dst: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), *args, str(dst)], check=True)
    return dst


COPIES = {  # name -> FFmpeg arguments making a copy of the original
    "smaller": ("-vf", "scale=160:120", "-c:v", "libx264", "-crf", "35"),
    "cropped": ("-vf", "crop=256:192", "-c:v", "libx264", "-crf", "23"),  # 10 % off every side
    "cropped_left": ("-vf", "crop=288:240:32:0", "-c:v", "libx264", "-crf", "23"),  # 10 % off one side
    "cropped_corner": ("-vf", "crop=288:232:22:8", "-c:v", "libx264", "-crf", "23"),  # 7 % left, 3 % right and top
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One-scene 320x240 videos: an original, its copies, and two unrelated videos."""
    root = tmp_path_factory.mktemp("fingerprints")
    made = {"original": root / "original.mp4"}
    make_video(made["original"], [Segment("pan_right", 60, seed=5)], size=(320, 240))
    for name, args in COPIES.items():
        made[name] = _ffmpeg(made["original"], root / f"{name}.mp4", *args)
    made["remuxed"] = _ffmpeg(made["original"], root / "remuxed.mkv", "-c", "copy")  # other bytes, same frames
    make_video(root / "fractal.mp4", [Segment("mandelbrot", 60)], size=(320, 240))
    make_video(root / "other_pan.mp4", [Segment("pan_right", 60, seed=40)], size=(320, 240))
    made["fractal"], made["other_pan"] = root / "fractal.mp4", root / "other_pan.mp4"
    return made


def test_copies_are_within_the_default_distance_and_unrelated_videos_are_not(clips: dict[str, Path]) -> None:
    fp = {name: fingerprint(str(path)) for name, path in clips.items()}
    original = fp["original"]
    for name in COPIES:
        assert near_distance(original, fp[name]) <= DEFAULT, name
        assert near_distance(original, fp[name]) == near_distance(fp[name], original)
    for name in ("fractal", "other_pan"):
        assert near_distance(original, fp[name]) > DEFAULT + 2, name
    # the same frames in another container: the same exact key; a re-encode has another
    assert fp["remuxed"]["frame_hash"] == original["frame_hash"]
    assert len({fp[n]["frame_hash"] for n in ("original", *COPIES, "fractal")}) == 1 + len(COPIES) + 1
    assert len(original["phash"]) == 16 and len(original["phash_crops"]) == 16


def _slide(path: Path, text: str, y: int) -> Path:
    """Three seconds of one lecture slide: black text on white, one line at height `y`."""
    vf = f"drawtext=fontfile={FONT}:text='{text}':fontsize=20:fontcolor=black:x=20:y={y}"
    src = "color=white:size=320x240:rate=30"
    args = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", src, "-t", "3", "-vf", vf, "-c:v", "libx264"]
    subprocess.run([*args, "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


@pytest.mark.skipif(not Path(FONT).exists(), reason=f"{FONT} missing: `make fonts`")
def test_slides_are_near_duplicates_across_videos_but_not_within_one(tmp_path: Path) -> None:
    """The documented limit of a thumbnail hash: white slides of one template come within the near
    distance whatever their words (so a lecture corpus sets `dedup.near: false`); one video's slides,
    the common case, are one group and all kept."""
    a = fingerprint(str(_slide(tmp_path / "a.mp4", "Linear algebra review", 30)))
    b = fingerprint(str(_slide(tmp_path / "b.mp4", "Probability and statistics", 30)))
    assert near_distance(a, b) <= 3
    keys = [_clip_key("a", 0, a, "lecture"), _clip_key("b", 1, b, "lecture")]
    assert near_duplicates(keys, DEFAULT) == []
    keys = [_clip_key("a", 0, a, "lecture-1"), _clip_key("b", 1, b, "lecture-2")]
    assert [(d.uid, d.duplicate_of) for d in near_duplicates(keys, DEFAULT)] == [("b", "id-a")]


def _clip_key(uid: str, rank: int, fp: dict, group: str) -> DedupKey:
    near, probes = int(fp["phash"], 16), tuple(int(h, 16) for h in fp["phash_crops"])
    return DedupKey((rank,), uid, f"id-{uid}", 0, f"x-{uid}", near, None, probes, None, group)


def test_clips_of_one_video_are_never_near_duplicates_of_each_other() -> None:
    """Pieces of one long static scene are a few bits apart; they are different footage."""
    keys = [DedupKey((i,), f"c{i}", f"id-c{i}", 0, f"x{i}", 0b1 << i, group="v1") for i in range(4)]
    assert near_duplicates(keys, 4) == []
    other = DedupKey((9,), "o", "id-o", 1, "xo", 0b11, group="v2")  # another video's copy: near all four
    assert [(d.uid, d.duplicate_of) for d in near_duplicates([*keys, other], 4)] == [("o", "id-c0")]
    best = DedupKey((-1,), "b", "id-b", 1, "xb", 0b11, group="v2")  # ranked first: the pieces drop
    found = {d.uid: d.duplicate_of for d in near_duplicates([*keys, best], 4)}
    assert found == {f"c{i}": "id-b" for i in range(4)}
    # many equal hashes in one band: one pass per distinct value, the same decisions
    same = [DedupKey((i,), f"s{i}", f"id-s{i}", 0, f"y{i}", 7, group=f"g{i % 3}") for i in range(3000)]
    found = {d.uid: d.duplicate_of for d in near_duplicates(same, 4)}
    assert found == {f"s{i}": ("id-s0" if i % 3 else "id-s1") for i in range(1, 3000)}


def test_fingerprint_states_the_facts_sample_frames_did(clips: dict[str, Path]) -> None:
    import av

    fp = fingerprint(str(clips["cropped"]))
    _, facts = sample_frames(str(clips["cropped"]), 3, 512)
    with av.open(str(clips["cropped"])) as c:
        decoded = sum(1 for _ in c.decode(video=0))
    assert {k: fp[k] for k in facts} == facts
    assert fp["frames"] == decoded == 60
    assert frame_indices(60) == [8, 22, 38, 52]  # the spacing sample_frames uses, for 4 frames
    assert fingerprint(str(clips["cropped"])) == fp  # deterministic


def _key(uid: str, rank: int, near: int, probes: tuple[int, ...] | None = None) -> DedupKey:
    return DedupKey((rank,), uid, f"id-{uid}", 0, f"x-{uid}", near, None, probes)


def test_probes_match_a_whole_frame_hash_but_never_each_other() -> None:
    far = (1 << 40) - 1  # 40 bits away from 0
    best, copy = _key("a", 0, far, (0,)), _key("b", 1, 0b111)  # copy's near is 3 bits from a probe of best
    (dup,) = near_duplicates([copy, best], 4)
    assert (dup.uid, dup.duplicate_of, dup.reason) == ("b", "id-a", "duplicate_near")
    # the better-ranked record can be the one whose whole frame matches the other's probe
    (dup,) = near_duplicates([_key("a", 0, 0b111), _key("b", 1, far, (0,))], 4)
    assert (dup.uid, dup.duplicate_of) == ("b", "id-a")
    # probe against probe is no match: two records whose crops agree but whose frames do not
    assert near_duplicates([_key("a", 0, far, (0,)), _key("b", 1, far << 20, (0,))], 4) == []
    # banding: the pair shares a band of a probe entry, and that group finds it
    groups: dict[int, list[tuple]] = {}
    for k in (best, copy):
        for band, entry in near_entries(k, 4):
            groups.setdefault(band, []).append(entry)
    found = {d.uid for g in groups.values() for d in near_in_band(g, 4)}
    assert found == {"b"}


def test_clip_dedup_key_ranks_the_largest_then_longest_then_first() -> None:
    def clip(unit: int, index: int, w: int, dur: float) -> ClipRecord:
        src = Source(f"v{index}.mp4", unit, index)
        keys = {"frame_hash": "f", "phash": "00ff", "phash_crops": ["0f"]}
        return ClipRecord(id=f"c{unit}{index}", video_id="v", clip_index=0, source=src, width=w,
                          height=w * 3 // 4, duration=dur, **keys)  # fmt: skip

    big, long_, first, later = clip(0, 5, 320, 2.0), clip(0, 6, 160, 3.0), clip(0, 1, 160, 2.0), clip(1, 0, 160, 2.0)
    assert sorted([later, first, long_, big], key=lambda c: c.dedup_key().rank) == [big, long_, first, later]
    key = big.dedup_key()
    assert (key.exact, key.near, key.near_probes, key.id) == ("f", 0xFF, (0x0F,), "c05")
    assert ClipRecord(id="x", video_id="v", clip_index=0, source=Source("v.mp4", 0, 0)).dedup_key() is None


def test_frames_are_decoded_from_the_clip_file_when_a_model_stage_looks(clips: dict[str, Path]) -> None:
    import fsspec

    from mmcurate.pipelines.video import Frames

    want, _ = sample_frames(str(clips["original"]), 3, 200)
    with fsspec.open("memory://dedup-test/clip.mp4", "wb") as f:
        f.write(clips["original"].read_bytes())
    for ref in (str(clips["original"]), "memory://dedup-test/clip.mp4"):
        rec = ClipRecord(id="c", video_id="v", clip_index=0, source=Source("v.mp4", 0, 0), media=ref)
        views = Frames(3, 200).views(rec)
        assert [v.pixels.size for v in views] == [(200, 150)] * 3
        assert [v.pixels.tobytes() for v in views] == [f.tobytes() for f in want]
        assert Frames(3, 200).views(rec)[0].pixels is views[0].pixels  # decoded once per record
        assert drop_frames(rec).frames is None
    assert [f.tobytes() for f in clip_frames(str(clips["original"]), 3, 200)] == [f.tobytes() for f in want]
    from_memory, facts = sample_frames(io.BytesIO(clips["original"].read_bytes()), 3, 200)
    assert [f.tobytes() for f in from_memory] == [f.tobytes() for f in want] and facts["frames"] == 60


def _ledger(out: Path, kind: str) -> list[dict]:
    rows: list[dict] = []
    for f in sorted(out.glob(f"ledger/{kind}/*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def _run(corpus: Path, out: Path) -> dict:
    from apache_beam.testing.test_pipeline import TestPipeline

    from mmcurate.pipelines.run import new_run

    config = CORPUS.config_class(filters={}, limits={"isolate": False})
    units = CORPUS.list_units([str(corpus)], config)
    with TestPipeline() as p:
        CORPUS.build(p, units, config, new_run(CORPUS, config, [str(corpus)], units, str(out)))
    import json

    return json.loads((out / "manifest.json").read_text())


def test_copies_of_a_video_drop_their_clips_as_duplicates_of_the_originals(tmp_path: Path) -> None:
    corpus = tmp_path / "in"
    corpus.mkdir()
    original = corpus / "a_original.mp4"
    make_video(original, [Segment("testsrc2", 60), Segment("pan_left", 60, seed=3)], size=(320, 240))
    _ffmpeg(original, corpus / "b_smaller.mp4", *COPIES["smaller"])
    _ffmpeg(original, corpus / "c_cropped.mp4", *COPIES["cropped"])
    _ffmpeg(original, corpus / "d_cropped_left.mp4", *COPIES["cropped_left"])
    _ffmpeg(original, corpus / "e_remuxed.mkv", "-c", "copy", "-metadata", "title=copy")  # same frames
    (corpus / "f_same_bytes.mp4").write_bytes(original.read_bytes())
    make_video(corpus / "g_other.mp4", [Segment("mandelbrot", 60), Segment("tilt_down", 60, seed=11)], size=(320, 240))
    make_video(corpus / "h_static.mp4", [Segment("static", 600, seed=21)], size=(320, 240))  # 2 pieces of 10 s

    runs = []
    for attempt in ("one", "two"):
        m = _run(corpus, tmp_path / attempt)
        assert m["accounting_ok"]
        clips = {(Path(c["source"]["uri"]).stem, c["clip_index"]): c for c in _ledger(tmp_path / attempt, "clip")}
        videos = {Path(v["source"]["uri"]).stem: v for v in _ledger(tmp_path / attempt, "video")}
        runs.append((m["kinds"], clips, videos))
    kinds, clips, videos = runs[0]
    assert kinds["video"]["counts"] == {"input": 8, "kept": 3, "dropped": 5, "quarantined": 0}
    assert kinds["clip"]["counts"] == {"input": 16, "kept": 6, "dropped": 10, "quarantined": 0}
    assert sum(v["clips"] for v in videos.values()) == 16
    # one long static scene's two pieces look alike (a few bits) and are both kept: one video
    static = [clips[("h_static", i)] for i in (0, 1)]
    assert [c["fate"]["status"] for c in static] == ["kept", "kept"]
    assert near_distance(*static) <= DEFAULT
    fates = {k: (c["fate"]["reason"], c["fate"]["duplicate_of"]) for k, c in clips.items()}
    for i in (0, 1):
        kept = clips[("a_original", i)]
        assert kept["fate"]["status"] == "kept" and kept["frame_hash"] and len(kept["phash_crops"]) == 16
        for copy in ("b_smaller", "c_cropped", "d_cropped_left"):
            assert fates[(copy, i)] == ("duplicate_near", kept["id"]), copy
        assert fates[("e_remuxed", i)] == ("duplicate_exact", kept["id"])
        assert fates[("f_same_bytes", i)] == ("duplicate_video", videos["a_original"]["id"])
        assert clips[("g_other", i)]["fate"]["status"] == "kept"
    assert {n: v["fate"]["reason"] for n, v in videos.items() if v["fate"]["status"] != "kept"} == {
        "b_smaller": "all_clips_dropped",
        "c_cropped": "all_clips_dropped",
        "d_cropped_left": "all_clips_dropped",
        "e_remuxed": "all_clips_dropped",
        "f_same_bytes": "duplicate_exact",
    }
    # the same counts, decisions and keys in a second run
    facts = ("id", "fate", "frame_hash", "phash", "phash_crops")
    one, two = ({k: [c[f] for f in facts] for k, c in r[1].items()} for r in runs)
    assert runs[0][0] == runs[1][0] and one == two


def test_video_dedup_config_fails_fast_and_maps_onto_the_core() -> None:
    config = CORPUS.config_class()
    params = CORPUS.dedup(config)
    assert params.near and params.max_distance == DEFAULT == config.dedup.max_distance
    off = CORPUS.config_class(dedup={"clips": False})
    assert not CORPUS.dedup(off).near  # videos by file bytes only
    assert not CORPUS.dedup(CORPUS.config_class(dedup={"near": False})).near
    for key, bad in (("max_distance", 40), ("clip", True), ("near", "sometimes")):
        with pytest.raises(ValueError, match=rf"dedup\.{key}"):
            CORPUS.config_class(dedup={key: bad})
