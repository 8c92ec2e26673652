"""Training data written from the people's labels: a dense caption and QA pairs per labelled clip, as
LLaMA-Factory SFT rows (ShareGPT-style, `<video>` in the user turn, the clip in `videos`).

The caption strings the consensus together: the action segments with their times, the text in the
scene, the camera and the shot. Templates are plain `str.format` strings over the consensus columns
(`TEMPLATES`; a run may pass its own), so a team can phrase them the way its model is prompted.
Clips people marked unusable give no rows.

The same labels also become video questions for the pass-rate corpus (`video_questions`: rows of
the question jsonl `mmcurate sft|rl` reads), each with an answer its verifiers check: multiple
choice over the labeling config's options (camera motion, shot size, angle, the one action of a
clip), and the scene text as an `ocr` answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mmcurate.stages.trainer_formats import VIDEO_TOKEN

TEMPLATES: dict[str, str] = {
    "caption_prompt": "Describe this video in detail: what happens and when, any text in the scene, and the camera.",
    "segment": "From {start:.1f} s to {end:.1f} s: {label}{text}.",
    "text": 'Text in the scene: "{text}".',
    "camera": "The camera is {camera_motion}; {shot_size} shot, {camera_angle} angle.",
    "q_camera": "How does the camera move in this video?",
    "q_shot": "What is the shot size of this video?",
    "q_text": "What text appears in this video?",
    "q_when": "When does the action '{label}' happen in this video?",
    "q_angle": "From which camera angle is this video shot?",
    "q_action": "Which action happens in this video?",
    "a_when": "From {start:.1f} s to {end:.1f} s.",
}


def _words(value: str) -> str:
    return value.replace("_", " ")


def caption(labels: Mapping[str, Any], t: Mapping[str, str] = TEMPLATES) -> str:
    """The dense caption of one clip from its consensus columns ("" when nothing was labelled)."""
    parts = []
    for seg in json.loads(labels.get("actions") or "[]"):
        text = f" ({seg['text']})" if seg.get("text") else ""
        parts.append(t["segment"].format(start=seg["start_time"], end=seg["end_time"], label=seg["label"], text=text))
    for track in json.loads(labels.get("text") or "[]"):
        if track.get("text"):
            parts.append(t["text"].format(text=track["text"]))
    if labels.get("camera_motion"):
        cam = {k: _words(str(labels.get(k) or "unknown")) for k in ("camera_motion", "shot_size", "camera_angle")}
        parts.append(t["camera"].format(**cam))
    return " ".join(parts)


def qa_pairs(labels: Mapping[str, Any], t: Mapping[str, str] = TEMPLATES) -> list[tuple[str, str]]:
    """(question, answer) pairs the labels answer: camera motion, shot size, scene text, action times."""
    out = []
    if labels.get("camera_motion"):
        out.append((t["q_camera"], _words(str(labels["camera_motion"]))))
    if labels.get("shot_size"):
        out.append((t["q_shot"], _words(str(labels["shot_size"]))))
    texts = [tr["text"] for tr in json.loads(labels.get("text") or "[]") if tr.get("text")]
    if texts:
        out.append((t["q_text"], "; ".join(texts)))
    for seg in json.loads(labels.get("actions") or "[]"):
        q = t["q_when"].format(label=seg["label"])
        out.append((q, t["a_when"].format(start=seg["start_time"], end=seg["end_time"])))
    return out


def sft_rows(
    labels: Mapping[str, Mapping[str, Any]], video_path: Mapping[str, str], t: Mapping[str, str] = TEMPLATES
) -> list[dict[str, Any]]:
    """LLaMA-Factory rows for every usable labelled clip with a video path (clip id -> path)."""
    rows = []
    for cid in sorted(labels):
        lab = labels[cid]
        if lab.get("usable") == "unusable" or cid not in video_path:
            continue
        pairs = [(t["caption_prompt"], caption(lab, t)), *qa_pairs(lab, t)]
        for question, answer in pairs:
            if not answer:
                continue
            rows.append({
                "messages": [{"role": "user", "content": f"{VIDEO_TOKEN}{question}"},
                             {"role": "assistant", "content": answer}],
                "images": [],
                "videos": [video_path[cid]],
            })  # fmt: skip
    return rows


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CHOICE_QUESTIONS = (("camera_motion", "q_camera"), ("shot_size", "q_shot"), ("camera_angle", "q_angle"))


def video_questions(
    labels: Mapping[str, Mapping[str, Any]],
    video_path: Mapping[str, str],
    options: Mapping[str, Sequence[str]],
    t: Mapping[str, str] = TEMPLATES,
) -> list[dict[str, Any]]:
    """Pass-rate corpus rows (question, answer, answer_type, choices, domain `video`, video) for every
    usable labelled clip with a video path; `options` are the configs' options per control (the
    letter answers index them). A label outside its options asks nothing."""
    rows = []
    for cid in sorted(labels):
        lab = labels[cid]
        if lab.get("usable") == "unusable" or cid not in video_path:
            continue
        base = {"domain": "video", "video": video_path[cid], "clip_id": cid}
        asked = [(control, t[key], lab.get(control)) for control, key in CHOICE_QUESTIONS]
        actions = {seg["label"] for seg in json.loads(lab.get("actions") or "[]")}
        if len(actions) == 1:
            asked.append(("action", t["q_action"], actions.pop()))
        for control, question, value in asked:
            opts = list(options.get(control) or [])
            if value and value in opts and len(opts) <= len(LETTERS):
                rows.append({**base, "question": question, "answer": LETTERS[opts.index(value)],
                             "answer_type": "choice", "choices": [_words(o) for o in opts]})  # fmt: skip
        texts = [tr["text"] for tr in json.loads(lab.get("text") or "[]") if tr.get("text")]
        if texts:
            rows.append({**base, "question": t["q_text"], "answer": " ".join(texts), "answer_type": "ocr"})
    return rows
