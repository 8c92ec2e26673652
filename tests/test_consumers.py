"""The trainers' own loaders on our outputs: verl 0.9.1 and LLaMA-Factory 0.9.5, each running its own
code in the "consumers" environment (tests/consumers_env.py: built once, about a minute, then cached)
through the driver scripts in tests/consumers/. Nothing of theirs is re-implemented or mocked here.

The corpus: three questions (number, text, multiple choice) and a tiny Llama fitted to answer each
partly right (pass rates 1/4 to 1/2), so `mmcurate rl` and `mmcurate sft` keep them; the tiny Qwen2-VL
built by tests/tiny_models.py is the consumers' tokenizer and processor (saved by .venv's transformers,
loaded by theirs). The grounding demo's SFT folder (GLM boxes, images beside it) goes through
LLaMA-Factory's loader as the pass-rate SFT folder does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import consumers_env
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

import mmcurate.rewards
from mmcurate.cli import main
from mmcurate.schemas import AnswerType, Question, Source
from mmcurate.stages import rollout as ro

tiny_models = pytest.importorskip("tiny_models")
pytestmark = pytest.mark.slow

BOX = "<|begin_of_box|>{}<|end_of_box|>"
PLACEHOLDER = "<|image|>"
SAMPLING = {"k": 8, "temperature": 1.0, "top_p": 1.0, "max_tokens": 8, "thinking": True, "seed": 0}
NAME = "tiny_vqa"
"""`output.name`: the dataset's key in dataset_info.json."""

# question, reference, answer type, choices, domain, what the model is fitted to answer (seen, blind),
# and a wrong answer the verifier can parse
ROWS = [
    ("how many cat shown ?", "2", "number", [], "counting", ["2", "3"], ["4"], "3"),
    ("which animal shown ?", "cat", "text", [], "general", ["cat", "dog"], ["bird"], "dog"),
    ("which color shown ?", "A", "choice", ["red", "blue"], "chart", ["A", "B"], ["B"], "B"),
]
WRONG = {row[0]: row[7] for row in ROWS}


@pytest.fixture(scope="module")
def consumers(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Runs a driver in the consumers env, with mmcurate importable there (a symlink tree)."""
    try:
        env = consumers_env.ensure_env()
    except consumers_env.ConsumersEnvUnavailable as exc:
        pytest.skip(str(exc))
    tree = consumers_env.package_tree(tmp_path_factory.mktemp("consumers-pkg"))
    work = tmp_path_factory.mktemp("consumers-work")

    def run(driver: str, args: dict[str, Any]) -> dict[str, Any]:
        return consumers_env.run_driver(env, driver, args, work, tree)

    return run


def _fit(root: Path, image: Path) -> Path:
    import torch

    prompt = ro.PromptParams(image_placeholder=PLACEHOLDER)
    sampling = ro.SamplingParams(**SAMPLING)
    train = []
    for text, answer, kind, choices, domain, seen, blind, _ in ROWS:
        q = Question(
            id="x", source=Source(uri="u", unit=0), question=text, answer=answer, answer_type=AnswerType(kind),
            images=[str(image)], domain=domain, choices=choices,
        )  # fmt: skip
        train += [(ro.build_messages(q, prompt, sampling), BOX.format(r)) for r in seen]
        train += [(ro.build_messages(q, prompt, sampling, blind=True), BOX.format(r)) for r in blind]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 5 s instead of 20 s on two busy cores: the model is far too small to share
    try:
        return tiny_models.build_tiny_llama(root / "model", train=train, steps=400, lr=5e-3)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("consumers-corpus")
    image = root / "img.png"
    Image.new("RGB", (32, 24), (200, 30, 30)).save(image)
    model = _fit(root, image)
    lines = [
        json.dumps({"question": t, "answer": a, "answer_type": k, "choices": c, "domain": d, "images": ["img.png"]})
        for t, a, k, c, d, *_ in ROWS
    ]
    (root / "questions.jsonl").write_text("\n".join(lines) + "\n")
    cfg = {
        "rollout": {
            "backend": "transformers",
            "transformers": {"model": str(model), "device": "cpu", "batch_size": 4},
            "sampling": SAMPLING,
            "prompt": {"image_placeholder": PLACEHOLDER},
            "cache": str(root / "cache"),
        },
        "output": {"name": NAME, "val_fraction": 0.5},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    vlm = tiny_models.build_tiny_qwen2vl(root / "qwen2vl")
    return {"root": root, "data": root / "questions.jsonl", "config": root / "config.yaml", "vlm": vlm}


def _run(mode: str, corpus: dict[str, Path], out: Path, **output: Any) -> dict[str, Any]:
    config = corpus["config"]
    if output:  # the same run with other output settings (the rollouts come from the cache)
        cfg = yaml.safe_load(config.read_text())
        cfg["output"].update(output)
        config = out.parent / f"{out.name}.yaml"
        config.write_text(yaml.safe_dump(cfg))
    argv = [mode, "--input", str(corpus["data"]), "--output", str(out), "--config", str(config)]
    assert main([*argv, "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kinds"]["question"]["counts"]["kept"] > 0  # the fit gives pass rates in (0, 1)
    return manifest


@pytest.mark.parametrize("embed", [True, False], ids=["images-embedded", "images-by-path"])
def test_verl_loads_every_rl_row_and_grades_through_its_reward_loop(
    corpus: dict[str, Path], consumers: Any, tmp_path: Path, embed: bool
) -> None:
    out = tmp_path / "rl-run"
    kept = _run("rl", corpus, out, embed_images=embed)["kinds"]["question"]["counts"]["kept"]
    files = sorted((out / "rl").rglob("*.parquet"))
    rows = {}
    for f in files:  # rl/{train,val}/part-00000.parquet (these three question ids split 1:2)
        for r in pq.read_table(f).to_pylist():
            assert f.relative_to(out / "rl").parent.as_posix() == r["extra_info"]["split"] in ("train", "val")
            rows[r["extra_info"]["id"]] = r
            assert [set(i) for i in r["images"]] == [{"bytes", "path"} if embed else {"image"}]
    assert len(rows) == kept
    responses = {
        qid: [BOX.format(r["extra_info"]["answer"]), BOX.format(WRONG[r["extra_info"]["question"]])]
        for qid, r in rows.items()
    }
    reward_file = Path(mmcurate.rewards.__file__).resolve()
    result = consumers(
        "verl_check.py",
        {
            "files": [str(f) for f in files],
            "model": str(corpus["vlm"]),
            "reward_path": str(reward_file),
            "reward_name": "compute_score",
            "responses": responses,
        },
    )

    # RLHFDataset kept every row (its prompt filter drops, with a printed traceback, any it cannot tokenize)
    assert result["dataset_class"] == "RLHFDataset" and result["dataset_len"] == len(rows)
    got = {item["extra_info"]["id"]: item for item in result["rows"]}
    assert got.keys() == rows.keys()
    for qid, row in rows.items():
        item = got[qid]
        assert {"raw_prompt", "index", "tools_kwargs", "interaction_kwargs", "data_source", "extra_info"} <= set(
            item["keys"]
        )
        assert item["extra_info"] == row["extra_info"]  # a struct: verl reads it as the dict we wrote
        assert item["index"] == row["extra_info"]["index"]
        assert item["data_source"] == row["data_source"] == f"mmcurate/{row['extra_info']['domain']}"
        assert (
            item["reward_model"]
            == row["reward_model"]
            == {"style": "rule", "ground_truth": row["extra_info"]["answer"]}
        )
        assert item["tools_kwargs"] == {} and item["interaction_kwargs"] == {}
        # one image part per <image> marker, and the rollout's prompt carries the processor's image tokens
        assert item["raw_prompt_roles"] == ["user"]
        assert item["raw_prompt_parts"].count("image") == len(row["images"]) == item["multi_modal"]["images"] == 1
        grid_tokens = sum(t * h * w for t, h, w in item["multi_modal"]["image_grid_thw"]) // 4  # merge_size 2
        assert item["image_tokens"] == grid_tokens > 0

    # our reward function, loaded by verl from the file and called by its naive reward manager
    assert result["reward_manager"] == "NaiveRewardManager"
    assert result["reward_fn"] == {"name": "compute_score", "file": str(reward_file)}
    assert len(result["scores"]) == 2 * len(rows)
    for s in result["scores"]:
        correct = s["response"] == BOX.format(rows[s["id"]]["extra_info"]["answer"])
        assert s["reward_score"] == s["reward_extra_info"]["score"] == (1.0 if correct else 0.0), s
        assert s["reward_extra_info"]["parsed"] == 1.0  # the wrong answers are graded wrong, not unreadable


def test_llamafactory_loads_the_sft_folder_after_a_move(
    corpus: dict[str, Path], consumers: Any, tmp_path: Path
) -> None:
    out = tmp_path / "sft-run"
    kept = _run("sft", corpus, out)["kinds"]["question"]["counts"]["kept"]
    rows = pq.read_table(out / "sft" / "part-00000.parquet").to_pylist()
    assert len(rows) == kept
    info = json.loads((out / "dataset_info.json").read_text())
    assert info[NAME]["file_name"] == "sft" and info[NAME]["formatting"] == "sharegpt"
    moved = tmp_path / "elsewhere" / "data"
    moved.parent.mkdir()
    shutil.move(out, moved)
    assert not out.exists()

    result = consumers(
        "llamafactory_check.py",
        {
            "dataset_dir": str(moved),
            "dataset": NAME,
            "model": str(corpus["vlm"]),
            "template": "qwen2_vl",
            "output_dir": str(tmp_path / "lf-out"),
        },
    )
    assert result["media_dir"] == result["dataset_dir"] == str(moved)  # LLaMA-Factory's default media_dir
    assert result["attr"] == {"load_from": "file", "dataset_name": "sft", "formatting": "sharegpt", "images": "images"}
    assert result["converter"] == "SharegptDatasetConverter"
    assert len(result["converted"]) == len(rows)
    for row, conv in zip(rows, result["converted"], strict=True):
        user, assistant = row["messages"]
        assert conv["_prompt"] == [user] and conv["_response"] == [assistant]
        assert conv["_images"] == [str(moved / p) for p in row["images"]]  # resolved against dataset_dir
        assert conv["images_exist"] == [True] * len(row["images"]) and row["images"]
    # tokenized through the qwen2_vl template: every row kept, its image opened and expanded into tokens
    assert result["mm_plugin"] == "Qwen2VLPlugin"
    assert len(result["tokenized"]) == len(rows)
    for row, tok in zip(rows, result["tokenized"], strict=True):
        assert tok["images"] == [str(moved / p) for p in row["images"]]
        assert tok["image_tokens"] == 6  # a 32x24 image: 2x3 merged 14-px patches
        assert tok["label_tokens"] > 0


def test_llamafactory_loads_the_grounding_sft_folder(corpus: dict[str, Path], consumers: Any, tmp_path: Path) -> None:
    """The grounding demo's `sft/` (GLM boxes on the 0-1000 grid, images under `images/`), moved away
    from where it was written: every row converted and tokenized by LLaMA-Factory, every image found."""
    assert main(["demo", "--corpus", "grounding", "--workdir", str(tmp_path / "work"), "--no-progress"]) == 0
    out = tmp_path / "work" / "grounding-output"
    manifest = json.loads((out / "manifest.json").read_text())
    name = manifest["config"]["output"]["sft"]["name"]
    rows = [r for f in sorted((out / "sft").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert len(rows) == manifest["extras"]["sft_rows"] > 0
    assert any("<|begin_of_box|>" in r["messages"][1]["content"] for r in rows)  # "where is" -> box rows
    moved = tmp_path / "elsewhere" / "data"
    moved.parent.mkdir()
    shutil.move(out, moved)
    shutil.rmtree(tmp_path / "work")  # the demo's inputs too: the folder needs nothing beside it

    result = consumers(
        "llamafactory_check.py",
        {
            "dataset_dir": str(moved),
            "dataset": name,
            "model": str(corpus["vlm"]),
            "template": "qwen2_vl",
            "output_dir": str(tmp_path / "lf-out"),
        },
    )
    assert result["media_dir"] == result["dataset_dir"] == str(moved)
    assert result["attr"] == {"load_from": "file", "dataset_name": "sft", "formatting": "sharegpt", "images": "images"}
    assert result["converter"] == "SharegptDatasetConverter"
    assert len(result["converted"]) == len(result["tokenized"]) == manifest["extras"]["sft_rows"]
    # LLaMA-Factory lists the folder's part files in directory order: rows are matched by content
    ours = sorted(json.dumps([r["messages"], [str(moved / p) for p in r["images"]]], sort_keys=True) for r in rows)
    theirs = sorted(
        json.dumps([[*c["_prompt"], *c["_response"]], c["_images"]], sort_keys=True) for c in result["converted"]
    )
    assert theirs == ours  # prompt, GLM-box answer and images as written, the images resolved against dataset_dir
    assert all(c["images_exist"] == [True] for c in result["converted"])
    assert all(r["images"][0].startswith("images/") and len(r["images"]) == 1 for r in rows)
    assert sorted(json.dumps(t["images"]) for t in result["tokenized"]) == sorted(
        json.dumps(c["_images"]) for c in result["converted"]
    )
    tokens_of: dict[str, set[int]] = {}
    for tok in result["tokenized"]:  # each image opened and expanded by the processor (at most 112x112 px)
        tokens_of.setdefault(tok["images"][0], set()).add(tok["image_tokens"])
        assert tok["label_tokens"] > 0
    assert all(len(n) == 1 and 0 < min(n) <= 16 for n in tokens_of.values()), tokens_of  # 16: 8x8 patches merged 2x2


def test_llamafactory_loads_the_annotation_video_rows(corpus: dict[str, Path], consumers: Any, tmp_path: Path) -> None:
    """`mmcurate annotate pull --sft`: the people's labels as caption and QA rows with the clip beside
    them, the folder moved away: LLaMA-Factory converts every row, finds its video, reads it with PyAV
    and expands it into video tokens through the qwen2_vl template."""
    from mmcurate.annotate import write_sft
    from mmcurate.annotation.client import queue_rows
    from mmcurate.demo.video import Segment, make_video

    videos = tmp_path / "in"
    videos.mkdir()
    make_video(videos / "v0.mp4", [Segment("pan_left", 60, seed=0)], size=(64, 48))
    cfg = tmp_path / "video.yaml"
    cfg.write_text("filters: {}\n")
    run = tmp_path / "video-run"
    assert main(["video", "--input", str(videos), "--output", str(run), "--config", str(cfg), "--no-progress"]) == 0
    (row,) = queue_rows(str(run))
    segment = {"label": "walk", "start_frame": 0, "end_frame": 30, "start_time": 0.0, "end_time": 1.0, "text": ""}
    labels = {row["clip_id"]: {"camera_motion": "pan_left", "shot_size": "wide", "usable": "usable",
                               "actions": json.dumps([segment])}}  # fmt: skip
    out = tmp_path / "sft"
    n = write_sft(str(run), labels, out)
    assert n == 4  # the caption, camera motion, shot size, and when the action happens
    moved = tmp_path / "elsewhere" / "data"
    moved.parent.mkdir()
    shutil.move(out, moved)

    result = consumers(
        "llamafactory_check.py",
        {"dataset_dir": str(moved), "dataset": "mmcurate_human", "model": str(corpus["vlm"]), "template": "qwen2_vl",
         "output_dir": str(tmp_path / "lf-out")},
    )  # fmt: skip
    assert result["videos_column"] == "videos" and result["converter"] == "SharegptDatasetConverter"
    clip = str(moved / "videos" / f"{row['clip_id']}.mp4")
    assert len(result["converted"]) == len(result["tokenized"]) == n
    for conv in result["converted"]:
        assert conv["_videos"] == [clip] and conv["videos_exist"] == [True] and conv["_images"] == []
    tokens = {tok["video_tokens"] for tok in result["tokenized"]}
    assert len(tokens) == 1 and tokens.pop() > 0  # the same clip, the same expansion, in every row
    assert all(tok["image_tokens"] == 0 and tok["label_tokens"] > 0 for tok in result["tokenized"])
