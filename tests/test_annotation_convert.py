"""Label Studio results into our annotation records, checked against Label Studio's own test cases
(`../shared/peer-data/label_studio`, skipped when absent) and by hand; agreement statistics against
hand-computed values; the labeling configs parsed by the SDK's own LabelInterface."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mmcurate.annotation.agreement import (
    box_iou,
    cohen_kappa,
    fleiss_kappa,
    kappa,
    majority,
    temporal_iou,
    text_agreement,
)
from mmcurate.annotation.convert import (
    ClipFrame,
    annotation_record,
    keyframe_boxes,
    ls_range,
    our_frames,
    timeline_matrix,
    timeline_regions,
)
from mmcurate.annotation.label_configs import config_hash, label_config, options
from mmcurate.schemas.annotation import FAMILIES, FrameBox, TextTrack, TimeSegment

PEER = Path(__file__).resolve().parents[2] / "shared" / "peer-data" / "label_studio"
needs_peer = pytest.mark.skipif(not PEER.is_dir(), reason="../shared/peer-data/label_studio not present")
CLIP = ClipFrame(frames=60, fps=30.0, width=640, height=360)


def _load(rel: str):
    return json.loads((PEER / rel).read_text())


@needs_peer
def test_keyframes_interpolate_exactly_as_label_studio_does() -> None:
    cases = _load("expected/ls_sdk_extract_key_frames_cases.json")["cases"]
    assert len(cases) == 7
    for case in cases:
        (region,) = case["input"]
        seq = keyframe_boxes(copy.deepcopy(region["value"]))
        assert len(seq) == case["expected"]["len"], case["name"]
        for i, want in case["expected"]["items"].items():
            got = seq[int(i)]
            for key, value in want.items():
                have = got.get(key, False) if key == "auto" else got[key]
                assert have == pytest.approx(value, abs=1e-9), (case["name"], i, key)


@needs_peer
def test_timeline_matrix_and_regions_match_the_ml_backend_cases() -> None:
    cases = _load("expected/ls_mlbackend_timelinelabels_cases.json")
    c = cases["timelinelabels_to_probs"]
    matrix = timeline_matrix(c["regions"], c["label_map"])
    assert matrix.tolist() == c["expected_labels_array"]
    c = cases["probs_to_timelinelabels"]
    regions = timeline_regions(c["probs"], c["label_map"], c["from_name"], c["score_threshold"])
    want = c["expected_regions"]
    assert [r["id"] for r in regions] == [r["id"] for r in want]
    assert [r["value"] for r in regions] == [r["value"] for r in want]
    assert [r["score"] for r in regions] == pytest.approx([r["score"] for r in want])
    assert {k for r in regions for k in r} == {k for r in want for k in r}
    import numpy as np

    back = timeline_matrix(regions, c["label_map"], frames=len(c["probs"]))  # the round trip they state
    assert back.tolist() == (np.asarray(c["probs"]) > c["score_threshold"]).astype(int).tolist()


@needs_peer
def test_real_label_studio_results_convert() -> None:
    """The docs' videorectangle value (1,051 frames, a disabled keyframe at 25) and the YOLO backend's
    real 35-frame track, and a real timelinelabels annotation."""
    clip = ClipFrame(frames=1051, fps=25.0, width=1280, height=720)
    value = _load("doc_examples/ls_doc_videorectangle_value.json")["value"]
    rec = annotation_record(
        "c", "text", {"id": 1, "result": [{"id": "r", "type": "videorectangle", "value": value}]}, clip
    )
    (track,) = rec.tracks
    assert [b.frame for b in track.boxes] == list(range(25))  # frames 1..25 (ours 0..24), the track ends
    first, last = track.boxes[0], track.boxes[-1]
    assert (first.x, first.y, first.width, first.height) == pytest.approx((16 * 12.8, 51 * 7.2, 30 * 12.8, 28 * 7.2))
    assert (last.x, last.auto) == (pytest.approx(44.7 * 12.8), False)
    assert track.boxes[9].auto and track.boxes[9].x == pytest.approx((16 + (44.7 - 16) * 9 / 17) * 12.8)
    assert rec.problems == []

    (pred,) = _load("ml_backend_yolo/opossum_snow_short_1.json")
    clip = ClipFrame(frames=35, fps=30.0, width=640, height=360)
    rec = annotation_record("c", "text", {"id": 2, "result": pred["result"]}, clip)
    assert len(rec.tracks) == sum(r["type"] == "videorectangle" for r in pred["result"]) > 0
    assert all(0 <= b.frame < 35 and b.x >= 0 and b.x + b.width <= 640 + 1e-9 for t in rec.tracks for b in t.boxes)

    ann = _load("ml_backend_yolo/test_timeline_labels_1.json")["annotation"]
    rec = annotation_record("c", "actions", ann, ClipFrame(frames=30, fps=25.0, width=640, height=360))
    assert [(s.label, s.start_frame, s.end_frame) for s in rec.segments][:2] == [
        ("Car", 0, 10),
        ("croquet_ball", 4, 15),
    ]
    assert rec.segments[0].end_time == pytest.approx(10 / 25)


def test_frames_convert_between_one_based_inclusive_and_zero_based_half_open() -> None:
    assert our_frames({"start": 1, "end": 3}) == (0, 3)
    assert ls_range(0, 3) == {"start": 1, "end": 3}
    for start, end in [(0, 1), (5, 60), (59, 60)]:
        assert our_frames(ls_range(start, end)) == (start, end)


def _results() -> list[dict]:
    return [
        {"id": "a1", "type": "timelinelabels", "from_name": "action", "to_name": "video",
         "value": {"ranges": [{"start": 1, "end": 30}], "timelinelabels": ["walk"]}},
        {"id": "a1", "type": "textarea", "from_name": "action_text", "to_name": "video",
         "value": {"text": ["a man walks to the door"]}},
        {"id": "t1", "type": "videorectangle", "from_name": "text_box", "to_name": "video",
         "value": {"framesCount": 60, "duration": 2.0, "sequence": [
             {"frame": 1, "enabled": True, "x": 10, "y": 10, "width": 20, "height": 10, "rotation": 0,
              "time": 0.0},
             {"frame": 11, "enabled": False, "x": 30, "y": 10, "width": 20, "height": 10, "rotation": 0,
              "time": 0.33}]}},
        {"id": "t1", "type": "textarea", "from_name": "transcription", "value": {"text": ["EXIT"]}},
        {"id": "t1", "type": "choices", "from_name": "lang", "value": {"choices": ["en"]}},
        {"id": "c1", "type": "choices", "from_name": "usable", "value": {"choices": ["usable"]}},
    ]  # fmt: skip


def test_an_annotation_with_every_family_of_result() -> None:
    ann = {"id": 7, "completed_by": {"id": 3, "email": "ann@example.com"}, "lead_time": 12.5, "result": _results()}
    rec = annotation_record("clip-1", "actions", ann, CLIP, task_id=4)
    assert (rec.clip_id, rec.annotator, rec.task_id, rec.annotation_id, rec.lead_time) == (
        "clip-1", "ann@example.com", 4, 7, 12.5)  # fmt: skip
    assert rec.segments == [TimeSegment("walk", 0, 30, 0.0, 1.0, "a man walks to the door")]
    (track,) = rec.tracks
    assert (track.text, track.lang, len(track.boxes)) == ("EXIT", "en", 11)
    # our frame 5 is Label Studio's 6th: half-way from x 10 % (frame 1) to 30 % (frame 11), 20 % of 640
    assert track.boxes[5] == FrameBox(5, 128.0, 36.0, 128.0, 36.0, 0.0, True)
    assert rec.choices == {"usable": "usable"} and rec.problems == [] and not rec.empty


def test_bad_results_are_reported_never_raised() -> None:
    bad = [
        {"id": "x", "type": "timelinelabels",
         "value": {"ranges": [{"start": 50, "end": 90}], "timelinelabels": ["run"]}},
        {"id": "y", "type": "timelinelabels", "value": {"ranges": [{"start": "soon"}], "timelinelabels": ["run"]}},
        {"id": "z", "type": "videorectangle", "value": {"framesCount": 60, "sequence": [
            {"frame": 1, "enabled": True, "x": 150, "y": 10, "width": 20, "height": 10, "rotation": 0, "time": 0}]}},
        {"id": "w", "type": "videorectangle", "value": {"framesCount": 60, "sequence": [
            {"frame": 1, "enabled": True, "x": 90, "y": 95, "width": 20, "height": 10, "rotation": 0, "time": 0}]}},
        {"id": "v", "type": "rectanglelabels", "value": {}},
        "not a result",
    ]  # fmt: skip
    rec = annotation_record("c", "actions", {"id": 1, "completed_by": 5, "result": bad}, CLIP)
    assert rec.annotator == "5"
    assert rec.segments == [TimeSegment("run", 49, 60, 49 / 30, 2.0)]  # clipped to the clip's 60 frames
    (track,) = rec.tracks  # w: clipped to the frame; z: outside, dropped
    assert track.boxes[0] == FrameBox(0, 576.0, 342.0, 64.0, 18.0, 0.0, False)
    text = "\n".join(rec.problems)
    needles = ("region x: range", "result 1 ('timelinelabels'): malformed", "region z: box on frame 1 lies outside",
               "region w: box on frame 1 clipped", "type 'rectanglelabels'", "result 5 ('not a result')")  # fmt: skip
    for needle in needles:
        assert needle in text, needle
    empty = annotation_record("c", "actions", {"id": 2, "completed_by": 6, "result": []}, CLIP)
    assert empty.empty and empty.problems == []
    broken = annotation_record("c", "actions", {"id": 3, "result": {"no": "list"}}, CLIP)
    assert broken.problems == ["annotation 3: `result` is not a list"]


def test_kappa_equals_the_hand_computed_values() -> None:
    a = ["pan", "pan", "static", "static", "zoom", "pan"]
    b = ["pan", "static", "static", "static", "zoom", "zoom"]
    # p_o = 4/6; p_e = (3*1 + 2*3 + 1*2) / 36 = 11/36; kappa = (p_o - p_e) / (1 - p_e)
    assert cohen_kappa(a, b) == pytest.approx((4 / 6 - 11 / 36) / (1 - 11 / 36))
    assert kappa([list(p) for p in zip(a, b, strict=True)]) == cohen_kappa(a, b)
    assert cohen_kappa(["x", "x"], ["x", "x"]) == 1.0
    rows = [["a", "a", "a"], ["a", "a", "b"], ["b", "b", "b"], ["a", "b", "b"]]
    # per item P_i = (sum n_ij^2 - n) / (n (n - 1)): 1, 1/3, 1, 1/3 -> P = 2/3; p_a = p_b = 1/2 -> P_e = 1/2
    assert fleiss_kappa(rows) == pytest.approx((2 / 3 - 1 / 2) / (1 - 1 / 2))
    assert kappa(rows) == fleiss_kappa(rows)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([["a", "b"], ["a"]])


def test_temporal_iou_text_agreement_and_consensus() -> None:
    a = [TimeSegment("walk", 0, 30, 0, 1), TimeSegment("talk", 10, 20, 0, 0)]
    b = [TimeSegment("walk", 10, 40, 0, 0)]
    assert temporal_iou(a, b) == pytest.approx((20 + 0) / (40 + 10))
    assert temporal_iou([], []) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    t1 = TextTrack((FrameBox(0, 0, 0, 10, 10), FrameBox(1, 0, 0, 10, 10)), "EXIT")
    t2 = TextTrack((FrameBox(0, 5, 0, 10, 10),), "EXIT.")
    iou, err = text_agreement([t1], [t2])
    assert iou == pytest.approx((50 / 150 + 0) / 2) and err == pytest.approx(1 / 4)
    assert text_agreement([t1], []) == (0.0, 1.0)
    assert majority(["pan", "static", "pan"]) == "pan"
    assert majority(["pan", "static"]) == "pan"  # a tie without gold: the first answer
    assert majority(["pan", "static"], {0: 0.5, 1: 0.9}) == "static"  # the annotator better on gold


def test_labeling_configs_parse_in_the_sdk_and_take_a_taxonomy() -> None:
    from label_studio_sdk.label_interface import LabelInterface

    for family in FAMILIES:
        xml = label_config(family)
        li = LabelInterface(xml)
        assert li.get_object("video") is not None, family
        assert config_hash(xml) == config_hash(label_config(family)) and len(config_hash(xml)) == 12
    cine = LabelInterface(label_config("cinematic"))
    assert {c.name for c in cine.controls} == {"camera_motion", "shot_size", "camera_angle", "composition"}
    assert "orbit" in options(label_config("cinematic"), "camera_motion")
    mine = label_config("actions", {"action": ["cook", "clean"]})
    assert options(mine, "action") == ["cook", "clean"] and config_hash(mine) != config_hash(label_config("actions"))
    assert {c.name for c in LabelInterface(mine).controls} == {"scene", "action", "action_text", "usable"}
    with pytest.raises(ValueError, match=r"annotation\.taxonomies\.actions\.verbs: no such control"):
        label_config("actions", {"verbs": ["x"]})
    with pytest.raises(ValueError, match="distinct options"):
        label_config("actions", {"action": []})


def test_calibration_reports_precision_recall_and_the_best_threshold() -> None:
    from mmcurate.annotation.calibration import calibration, threshold_report

    rep = threshold_report([0.1, 0.2, 0.3, 0.4], [False, True, True, True], 0.35)
    # automatic yes only for 0.4: tp 1, fp 0, fn 2; the midpoint 0.15 separates them all
    assert (rep["precision"], rep["recall"], rep["agreement"]) == (1.0, pytest.approx(1 / 3), 0.5)
    assert (rep["suggested_threshold"], rep["suggested_agreement"]) == (pytest.approx(0.15), 1.0)
    rows = [
        {"clip_id": "a", "scores": {"flow_speed": 0.2}, "pre_annotations": {"camera_motion": "pan_left", "text": []}},
        {"clip_id": "b", "scores": {"flow_speed": 0.001}, "pre_annotations": {"camera_motion": "static",
                                                                                "text": [{"text": "EXIT"}]}},
        {"clip_id": "c", "scores": {"flow_speed": 0.002}, "pre_annotations": {"camera_motion": "static", "text": []}},
    ]  # fmt: skip
    labels = {"a": {"camera_motion": "pan_left", "usable": "usable"}, "b": {"camera_motion": "static",
              "text_present": "text", "usable": "unusable"}, "c": {"camera_motion": "handheld"}, "zz": {}}  # fmt: skip
    cal = calibration(rows, labels, {"flow_speed": 0.0035})
    assert cal["flow_speed"]["clips"] == 3 and cal["flow_speed"]["recall"] == 0.5  # c moves, below the threshold
    assert cal["flow_speed"]["suggested_threshold"] == pytest.approx(0.0015)
    assert cal["camera_motion_label"] == {"clips": 3, "accuracy": pytest.approx(2 / 3)}
    assert cal["ocr_text_present"]["precision"] == 1.0 and cal["kept_usable"] == {"clips": 2, "precision": 0.5}


def test_captions_and_qa_pairs_from_consensus_labels() -> None:
    from mmcurate.annotation.derived import caption, qa_pairs, sft_rows

    segs = [{"label": "walk", "start_time": 0.0, "end_time": 1.5, "text": "a man walks in"}]
    lab = {"actions": json.dumps(segs), "text": json.dumps([{"text": "EXIT", "lang": "en", "frames": 30}])}
    lab |= {"camera_motion": "pan_left", "shot_size": "close_up", "camera_angle": "eye_level", "usable": "usable"}
    assert caption(lab) == (
        'From 0.0 s to 1.5 s: walk (a man walks in). Text in the scene: "EXIT". '
        "The camera is pan left; close up shot, eye level angle."
    )
    assert qa_pairs(lab) == [
        ("How does the camera move in this video?", "pan left"),
        ("What is the shot size of this video?", "close up"),
        ("What text appears in this video?", "EXIT"),
        ("When does the action 'walk' happen in this video?", "From 0.0 s to 1.5 s."),
    ]
    rows = sft_rows(
        {"c": lab, "d": {**lab, "usable": "unusable"}, "e": lab}, {"c": "videos/c.mp4", "d": "videos/d.mp4"}
    )
    assert len(rows) == 5 and {r["videos"][0] for r in rows} == {"videos/c.mp4"}  # d unusable, e has no file
    assert rows[0]["messages"][0]["content"].startswith("<video>Describe")

    from mmcurate.annotation.derived import video_questions

    opts = {"camera_motion": options(label_config("cinematic"), "camera_motion"), "shot_size": ["wide", "close_up"],
            "action": ["run", "walk"]}  # fmt: skip
    qs = video_questions({"c": {**lab, "camera_angle": "not_an_option"}, "d": {**lab, "usable": "unusable"}},
                         {"c": "videos/c.mp4", "d": "videos/d.mp4"}, opts)  # fmt: skip
    assert [(q["answer_type"], q["answer"]) for q in qs] == [
        ("choice", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[opts["camera_motion"].index("pan_left")]),
        ("choice", "B"),  # close_up of wide / close_up
        ("choice", "B"),  # the clip's one action, walk
        ("ocr", "EXIT"),
    ]  # the angle outside its options asks nothing; the unusable clip nothing at all
    assert qs[1]["choices"] == ["wide", "close up"] and {q["video"] for q in qs} == {"videos/c.mp4"}
    assert all(q["domain"] == "video" and q["clip_id"] == "c" for q in qs)


def _row(cid: str, frames: int = 90, cuts: list[int] | None = None) -> dict:
    return {"clip_id": cid, "start_frame": 10, "end_frame": 10 + frames, "fps": 30.0,
            "pre_annotations": {"camera_motion": "", "scene_cuts": cuts or [], "text": []}}  # fmt: skip


def test_scene_cuts_become_the_scene_timeline_and_never_an_action() -> None:
    from mmcurate.annotation.predictions import predictions, scene_segments

    row = _row("a", 90, [30, 60])
    segs = scene_segments(row)
    # ours [0, 30), [30, 60), [60, 90) are Label Studio's 1-30, 31-60, 61-90
    assert [s["value"]["ranges"] for s in segs] == [[{"start": 1, "end": 30}], [{"start": 31, "end": 60}],
                                                     [{"start": 61, "end": 90}]]  # fmt: skip
    assert {s["from_name"] for s in segs} == {"scene"} and [s["value"]["timelinelabels"] for s in segs] == [
        ["scene"]
    ] * 3
    (pred,) = predictions(row, "actions")
    assert pred["result"] == segs
    assert [s["value"]["ranges"] for s in scene_segments(_row("b", 45))] == [[{"start": 1, "end": 45}]]
    # an annotator who started from the prediction sends the scenes back: they are not their actions
    walk = {"id": "x", "from_name": "action", "to_name": "video", "type": "timelinelabels",
            "value": {"ranges": [{"start": 5, "end": 20}], "timelinelabels": ["walk"]}}  # fmt: skip
    answer = {"id": 7, "completed_by": "ann", "result": [*segs, walk]}
    rec = annotation_record("b", "actions", answer, ClipFrame(90, 30.0, 320, 240))
    assert [(s.label, s.start_frame, s.end_frame) for s in rec.segments] == [("walk", 4, 20)] and not rec.problems


def test_queue_rows_carry_the_stitched_cuts_inside_each_clip() -> None:
    from mmcurate.annotation.queue import queue_row
    from mmcurate.schemas import ClipRecord
    from mmcurate.schemas.base import Source

    clip = ClipRecord(id="c", video_id="v", clip_index=0, source=Source("in.mp4", 0), start_frame=100,
                      end_frame=200)  # fmt: skip
    row = queue_row(clip, "shard-0.tar", [40, 100, 130, 170, 200, 260])
    assert row["pre_annotations"]["scene_cuts"] == [30, 70]  # inside the clip only, in its own frames


def test_gold_copies_are_mixed_in_at_the_rate_with_stable_keys() -> None:
    from mmcurate.annotation.client import mixed

    queue = [_row(f"c{i}") for i in range(9)]
    gold = [_row("g0"), _row("g1")]
    keys = [k for k, _, _ in mixed(queue, gold, 0.25)]
    # 0.25 of the tasks gold: one after every 3 regular ones, cycling through the gold clips
    assert keys == ["c0", "c1", "c2", "gold-0:g0", "c3", "c4", "c5", "gold-0:g1", "c6", "c7", "c8", "gold-1:g0"]
    assert keys == [k for k, _, _ in mixed(queue, gold, 0.25)]  # a rerun finds the same keys
    # a gold clip added later keeps most earlier keys: each key is (copy number, clip)
    more = [k for k, _, _ in mixed(queue, [*gold, _row("g2")], 0.25)]
    assert [k for k in more if k.startswith("gold")] == ["gold-0:g0", "gold-0:g1", "gold-0:g2"]
    assert [k for k, _, _ in mixed(queue, gold, 0.0)] == [f"c{i}" for i in range(9)]
    assert sum(g for _, _, g in mixed(queue, gold, 0.5)) == 9


def test_consensus_weights_ties_by_the_annotators_who_answered_and_keeps_descriptions() -> None:
    from mmcurate.annotation.consensus import consensus
    from mmcurate.schemas.annotation import ClipAnnotation, TimeSegment

    gold = {"g": {"shot_size": "close_up", "camera_motion": "static"}}
    anns = [
        ClipAnnotation("c", "cinematic", "alice", choices={"camera_motion": "static"}),
        ClipAnnotation("c", "cinematic", "bob", choices={"camera_motion": "static", "shot_size": "wide"}),
        ClipAnnotation("c", "cinematic", "carol", choices={"camera_motion": "static", "shot_size": "close_up"}),
        ClipAnnotation("g", "cinematic", "bob", choices={"shot_size": "wide"}, gold=True),
        ClipAnnotation(
            "g", "cinematic", "carol", choices={"shot_size": "close_up", "camera_motion": "static"}, gold=True
        ),
    ]
    rows, fam = consensus(anns, "cinematic", {"c": 30.0, "g": 30.0}, gold)
    # bob and carol tie on shot_size; carol is right on gold, bob is not: hers wins
    assert fam.gold_accuracy == {"bob": 0.0, "carol": 1.0} and fam.gold_answers == 2
    assert rows["c"]["shot_size"] == "close_up" and set(rows) == {"c"}  # gold copies make no consensus row
    assert fam.tasks_per_annotator == {"alice": 1, "bob": 1, "carol": 1}
    # gold of another family's controls asks nothing of this one
    acts = [ClipAnnotation("g", "actions", "bob", choices={"usable": "usable"}, gold=True)]
    assert consensus(acts, "actions", {"g": 30.0}, gold)[1].gold_accuracy == {}
    walk = [ClipAnnotation("d", "actions", who, segments=[TimeSegment("walk", a, b, a / 30, b / 30, text)])
            for who, a, b, text in (("x", 0, 40, "a man walks"), ("y", 10, 60, "a man walks to the door"))]  # fmt: skip
    (seg,) = json.loads(consensus(walk, "actions", {"d": 30.0})[0]["d"]["actions"])
    assert (seg["start_frame"], seg["end_frame"], seg["text"]) == (10, 40, "a man walks to the door")


def test_kappa_uses_fleiss_when_the_annotators_differ_between_clips() -> None:
    from mmcurate.annotation.consensus import consensus
    from mmcurate.schemas.annotation import ClipAnnotation

    pairs = {"c1": ("ann", "bob", "pan_left", "pan_left"), "c2": ("ann", "cat", "static", "pan_left"),
             "c3": ("bob", "cat", "static", "static")}  # fmt: skip
    anns = [ClipAnnotation(c, "cinematic", who, choices={"camera_motion": ans})
            for c, (w1, w2, a1, a2) in pairs.items() for who, ans in ((w1, a1), (w2, a2))]  # fmt: skip
    fam = consensus(anns, "cinematic", dict.fromkeys(pairs, 30.0))[1]
    items = [[a1, a2] for _, _, a1, a2 in pairs.values()]
    assert fam.kappa["camera_motion"] == pytest.approx(fleiss_kappa(items)) and fam.kappa_items == {"camera_motion": 3}


def test_camera_motion_confidence_from_the_flow_statistics() -> None:
    from mmcurate.annotation.predictions import motion_confidence, predictions

    flow = {"camera_pan": 0.09, "camera_tilt": -0.03, "camera_zoom": 0.0, "flow_speed": 0.1}
    assert motion_confidence(flow, "pan_left") == pytest.approx(0.09 / 0.12)  # its share of pan + tilt + zoom / 4
    assert motion_confidence(flow, "tilt_down") == pytest.approx(0.03 / 0.12)
    still = {"camera_pan": 0.005, "camera_tilt": 0.0, "camera_zoom": 0.004}
    assert motion_confidence(still, "static", 0.02) == pytest.approx(1 - 0.005 / 0.02)
    assert motion_confidence({}, "static") is None
    row = {"pre_annotations": {"camera_motion": "pan_left"}, "scores": flow}
    (pred,) = predictions(row, "cinematic")
    assert pred["score"] == pytest.approx(0.75) and pred["result"][0]["value"] == {"choices": ["pan_left"]}


def test_the_combined_config_holds_every_family_and_its_answers_split_back() -> None:
    from label_studio_sdk.label_interface import LabelInterface

    from mmcurate.annotation.convert import split_families
    from mmcurate.annotation.label_configs import COMBINED, family_controls

    xml = label_config(COMBINED, {"action": ["cook", "clean"], "camera_motion": ["static", "orbit"]})
    li = LabelInterface(xml)
    every = {c.name for f in FAMILIES for c in LabelInterface(label_config(f)).controls}
    assert {c.name for c in li.controls} == every and len(ET.fromstring(xml).findall("Video")) == 1
    assert family_controls("cinematic") == {"camera_motion", "shot_size", "camera_angle", "composition"}
    assert options(xml, "action") == ["cook", "clean"] and options(xml, "camera_motion") == ["static", "orbit"]
    with pytest.raises(ValueError, match=r"taxonomies\.combined\.verbs: no such control"):
        label_config(COMBINED, {"verbs": ["x"]})
    answer = {"id": 3, "completed_by": "ann", "result": [
        {"id": "a", "from_name": "action", "to_name": "video", "type": "timelinelabels",
         "value": {"ranges": [{"start": 1, "end": 10}], "timelinelabels": ["cook"]}},
        {"from_name": "camera_motion", "to_name": "video", "type": "choices", "value": {"choices": ["orbit"]}},
        {"from_name": "usable", "to_name": "video", "type": "choices", "value": {"choices": ["usable"]}},
        {"from_name": "text_present", "to_name": "video", "type": "choices", "value": {"choices": ["no text"]}},
        {"from_name": "bogus", "to_name": "video", "type": "rating", "value": {}},
    ]}  # fmt: skip
    rec = annotation_record("c", COMBINED, answer, ClipFrame(30, 30.0, 320, 240))
    acts, text, cine = split_families(rec)
    assert (acts.family, text.family, cine.family) == FAMILIES
    assert [s.label for s in acts.segments] == ["cook"] and acts.choices == {"usable": "usable"}
    assert text.choices == {"text_present": "no text"} and not text.segments
    assert cine.choices == {"camera_motion": "orbit"} and not cine.segments
    assert len(acts.problems) == 1 and not text.problems and not cine.problems  # the bogus result, counted once
