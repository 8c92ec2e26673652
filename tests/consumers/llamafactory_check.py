"""LLaMA-Factory 0.9.5's own loader on mmcurate's SFT output; runs INSIDE the consumers env
(tests/consumers_env.py).

    python llamafactory_check.py ARGS.json RESULT.json

ARGS: `dataset_dir` (the folder holding dataset_info.json), `dataset` (its name there), `model` (a local
model folder with a tokenizer and processor), `template` (LLaMA-Factory's chat template name) and
`output_dir` (scratch).

What runs, all LLaMA-Factory's, in the order its SFT workflow (train/sft/workflow.py) runs it: the
argument parser (`get_train_args`: DataArguments sets `media_dir` to `dataset_dir` when not given);
`get_dataset_list` (reads dataset_info.json); `_load_single_dataset` (loads the file with datasets and
converts each row with the ShareGPT converter, `_find_medias` resolving image paths against
`media_dir`); then `load_tokenizer`, `get_template_and_fix_tokenizer` and `get_dataset` (stage sft), which
tokenize every row through the template's multimodal plugin: the images (and videos, read with PyAV
at the plugin's fps) are opened and turned into image (video) tokens by the processor.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import llamafactory
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.data.converter import get_dataset_converter
from llamafactory.data.loader import _load_single_dataset
from llamafactory.data.parser import get_dataset_list
from llamafactory.extras.constants import IGNORE_INDEX
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer


def plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return f"<{type(value).__name__}>"


def converted_row(row: dict[str, Any]) -> dict[str, Any]:
    images = row.get("_images") or []
    videos = row.get("_videos") or []
    return {
        "_prompt": plain(row["_prompt"]),
        "_response": plain(row["_response"]),
        "_system": row.get("_system"),
        "_images": plain(images),
        "images_exist": [isinstance(p, str) and os.path.isfile(p) for p in images],
        "_videos": plain(videos),
        "videos_exist": [isinstance(p, str) and os.path.isfile(p) for p in videos],
    }


def tokenized_row(row: dict[str, Any], image_token: int, video_token: int) -> dict[str, Any]:
    return {
        "tokens": len(row["input_ids"]),
        "image_tokens": sum(t == image_token for t in row["input_ids"]),
        "video_tokens": sum(t == video_token for t in row["input_ids"]),
        "label_tokens": sum(t != IGNORE_INDEX for t in row["labels"]),
        "images": plain(row.get("images")),
        "videos": plain(row.get("videos")),
    }


def main(args_path: str, result_path: str) -> None:
    args = json.loads(Path(args_path).read_text())
    model_args, data_args, training_args, _, _ = get_train_args(
        {
            "stage": "sft",
            "do_train": True,
            "model_name_or_path": args["model"],
            "finetuning_type": "lora",
            "dataset": args["dataset"],
            "dataset_dir": args["dataset_dir"],
            "template": args["template"],
            "cutoff_len": 1024,
            "overwrite_cache": True,
            "output_dir": args["output_dir"],
            "report_to": "none",
        }
    )
    attrs = get_dataset_list(data_args.dataset, data_args.dataset_dir)
    attr = attrs[0]
    converter = get_dataset_converter(attr.formatting, attr, data_args)
    aligned = _load_single_dataset(attr, model_args, data_args, training_args)

    tokenizer_module = load_tokenizer(model_args)
    tokenizer = tokenizer_module["tokenizer"]
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    image_token = tokenizer.convert_tokens_to_ids(template.mm_plugin.image_token)
    video_token = tokenizer.convert_tokens_to_ids(template.mm_plugin.video_token)
    result = {
        "llamafactory": llamafactory.__version__,
        "dataset_dir": data_args.dataset_dir,
        "media_dir": data_args.media_dir,
        "attr": {k: plain(getattr(attr, k, None)) for k in ("load_from", "dataset_name", "formatting", "images")},
        "videos_column": getattr(attr, "videos", None),
        "tags": {k: getattr(attr, k, None) for k in ("role_tag", "content_tag", "user_tag", "assistant_tag")},
        "converter": type(converter).__name__,
        "mm_plugin": type(template.mm_plugin).__name__,
        "converted": [converted_row(r) for r in aligned],
        "tokenized": [tokenized_row(r, image_token, video_token) for r in module["train_dataset"]],
    }
    Path(result_path).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
