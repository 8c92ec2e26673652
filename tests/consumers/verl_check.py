"""verl 0.9.1's own code on mmcurate's RL parquet; runs INSIDE the consumers env (tests/consumers_env.py).

    python verl_check.py ARGS.json RESULT.json

ARGS: `files` (parquet paths), `model` (a local model folder: tokenizer, processor, config.json),
`reward_path` / `reward_name` (the custom reward function), `responses` ({extra_info.id: [text, ...]}).

What runs, all verl's: its default trainer config (`trainer/config/_generated_ppo_trainer.yaml`, the
composed `ppo_trainer.yaml`) with the command-line overrides a user would give; the tokenizer and
processor through `verl.utils.hf_tokenizer` / `hf_processor` (what the trainer's HFModelConfig calls;
HFModelConfig itself needs hydra, whose antlr 4.9 pin cannot live beside math-verify's antlr 4.13);
`create_rl_dataset` (the trainer's dataset factory: RLHFDataset, which also drops, with a printed
traceback, every row its processor cannot tokenize: `data.filter_overlong_prompts=True`);
`__getitem__` on every row; the agent loop's own prompt path for each row (`process_multi_modal_info`,
then the Continuous Token builder that renders the prompt ids sent to the rollout server); and the
reward loop's `RewardLoopWorker` (the class verl's RewardLoopManager runs as a Ray actor, here
in-process): it loads `reward.custom_reward_function` with `load_reward_manager` /
`get_custom_reward_fn` and scores a DataProto of those prompts plus tokenized responses with the
registered `naive` reward manager, which decodes the response ids itself.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import verl
from omegaconf import OmegaConf
from verl import DataProto
from verl.experimental.reward_loop import RewardLoopWorker
from verl.trainer.ppo.utils import create_rl_dataset
from verl.utils import hf_processor, hf_tokenizer
from verl.utils.dataset.rl_dataset import collate_fn, get_dataset_class
from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder


def trainer_config(args: dict[str, Any]) -> Any:
    cfg = OmegaConf.load(Path(verl.__file__).parent / "trainer" / "config" / "_generated_ppo_trainer.yaml")
    overrides = {
        "data.train_files": args["files"],
        "data.filter_overlong_prompts": True,
        "actor_rollout_ref.model.path": args["model"],
        "reward.custom_reward_function.path": args["reward_path"],
        "reward.custom_reward_function.name": args["reward_name"],
    }
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def plain(value: Any) -> Any:
    """JSON-able copies of what verl returned (numpy scalars and arrays, tensors)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray | torch.Tensor):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return f"<{type(value).__name__}>"


def prompt_builder(cfg: Any, tokenizer: Any, processor: Any) -> Any:
    """The agent loop's Continuous Token builder; hf_model_type None picks the generic VL builder (the tiny
    test model's chat template is not Qwen's ChatML, which the qwen2_vl builder patches)."""
    return create_continuous_token_builder(
        tokenizer,
        hf_model_type=None,
        chat_template_kwargs=cfg.data.get("apply_chat_template_kwargs", {}),
        mm_processor_kwargs=cfg.data.get("mm_processor_kwargs", {}),
        processor=processor,
    )


def rollout_prompt(item: dict[str, Any], cfg: Any, builder: Any, processor: Any) -> tuple[list[int], dict]:
    """The agent loop's prompt path (SingleTurnAgentLoop.run): the images out of `raw_prompt` with the
    dataset class's own `process_multi_modal_info`, then the builder renders the prompt ids."""
    messages = copy.deepcopy(list(item["raw_prompt"]))
    patch = getattr(getattr(processor, "image_processor", None), "patch_size", 14)
    dataset_cls = get_dataset_class(cfg.data)
    images, videos, audios = asyncio.run(
        dataset_cls.process_multi_modal_info(messages, image_patch_size=patch, config=cfg.data)
    )
    mm: dict[str, Any] = {}
    ids = builder.build_initial_tokens(messages, images=images, videos=videos, audios=audios, mm_inputs_out=mm)
    return list(ids), {"images": len(images or []), "image_grid_thw": plain(mm.get("image_grid_thw"))}


def describe(item: dict[str, Any], prompt_ids: list[int], mm: dict, image_token: int) -> dict[str, Any]:
    parts = [p for m in item["raw_prompt"] for p in (m["content"] if isinstance(m["content"], list) else [])]
    return {
        "keys": sorted(item),
        "index": plain(item["index"]),
        "data_source": item["data_source"],
        "ability": item.get("ability"),
        "reward_model": plain(item.get("reward_model")),
        "extra_info": plain(item["extra_info"]),
        "tools_kwargs": plain(item["tools_kwargs"]),
        "interaction_kwargs": plain(item["interaction_kwargs"]),
        "raw_prompt_roles": [m["role"] for m in item["raw_prompt"]],
        "raw_prompt_parts": [p.get("type") for p in parts],
        "prompt_tokens": len(prompt_ids),
        "image_tokens": sum(t == image_token for t in prompt_ids),
        "multi_modal": mm,
    }


def reward_batch(
    items: list[dict[str, Any]], prompts: list[list[int]], responses: dict[str, list[str]], tokenizer: Any
) -> tuple[DataProto, list[tuple[str, str]]]:
    """A rollout-shaped DataProto: left-padded prompt ids, right-padded response ids (ending with eos),
    the attention mask over both, and the dataset row's non-tensor fields (verl's collate_fn)."""
    samples, which = [], []
    for item, prompt in zip(items, prompts, strict=True):
        for text in responses.get(item["extra_info"]["id"], []):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            samples.append((copy.deepcopy(item), prompt, ids))
            which.append((item["extra_info"]["id"], text))
    width_p = max(len(p) for _, p, _ in samples)
    width_r = max(len(r) for _, _, r in samples)
    pad = tokenizer.pad_token_id
    rows = []
    for item, prompt, ids in samples:
        p = [pad] * (width_p - len(prompt)) + prompt
        r = ids + [pad] * (width_r - len(ids))
        mask = [0] * (width_p - len(prompt)) + [1] * len(prompt) + [1] * len(ids) + [0] * (width_r - len(ids))
        item.update(
            prompts=torch.tensor(p), responses=torch.tensor(r), input_ids=torch.tensor(p + r),
            attention_mask=torch.tensor(mask),
        )  # fmt: skip
        rows.append(item)
    return DataProto.from_single_dict(collate_fn(rows)), which


def reward_fn_origin(fn: Any) -> dict[str, Any]:
    """The function verl loaded (get_custom_reward_fn wraps it in a partial with the reward kwargs)."""
    raw = fn.args[0] if isinstance(fn, functools.partial) else fn
    return {"name": raw.__name__, "file": inspect.getsourcefile(raw)}


def main(args_path: str, result_path: str) -> None:
    args = json.loads(Path(args_path).read_text())
    cfg = trainer_config(args)
    tokenizer = hf_tokenizer(args["model"], trust_remote_code=True)
    processor = hf_processor(args["model"], trust_remote_code=True)
    dataset = create_rl_dataset(cfg.data.train_files, cfg.data, tokenizer, processor, is_train=True)
    image_token = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    builder = prompt_builder(cfg, tokenizer, processor)
    items, prompts, rows = [], [], []
    for i in range(len(dataset)):
        item = dataset[i]
        ids, mm = rollout_prompt(item, cfg, builder, processor)
        items.append(item)
        prompts.append(ids)
        rows.append(describe(item, ids, mm, image_token))

    worker = RewardLoopWorker(cfg)
    data, which = reward_batch(items, prompts, args["responses"], tokenizer)
    outputs = worker.loop.run_until_complete(worker.compute_score_batch(data))
    scores = [
        {"id": qid, "response": text, "reward_score": plain(out["reward_score"]),
         "reward_extra_info": plain(out.get("reward_extra_info", {}))}
        for (qid, text), out in zip(which, outputs, strict=True)
    ]  # fmt: skip
    result = {
        "verl": verl.__version__,
        "dataset_class": type(dataset).__name__,
        "dataset_len": len(dataset),
        "rows": rows,
        "reward_manager": type(worker.reward_manager).__name__,
        "reward_fn": reward_fn_origin(worker.reward_manager.compute_score),
        "scores": scores,
    }
    Path(result_path).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
