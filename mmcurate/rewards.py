"""A verl reward function that grades a response exactly as pass-rate selection graded the rollouts.

GLM-4.5V's lesson: a weak verifier in one domain derails a whole RL run, and a reward that differs
from the one the data was selected with skews the curriculum. So the trainer's reward is the same
answer extraction and the same verifier, with the same settings, as `mmcurate rl` used: each row's
`extra_info` carries the answer type, the option texts and the verifier settings (`verify`, JSON).

verl 0.9 (`reward.custom_reward_function.path` = this file, `.name` = `compute_score`; the
top-level `custom_reward_function` of older verl versions is ignored by 0.9's `main_ppo`):

    python -m verl.trainer.main_ppo data.train_files="$TRAIN" data.val_files="$VAL" \\
        reward.custom_reward_function.path="$(python -c 'import mmcurate.rewards as r; print(r.__file__)')" \\
        reward.custom_reward_function.name=compute_score ...

with $TRAIN / $VAL the lists of every parquet file under `rl/train/` and `rl/val/` (docs/rl.md).

Rows whose `data_source` does not start with `mmcurate` (a domain mapped to one of verl's own
datasets by `output.data_sources`) go to verl's `default_compute_score` when verl is importable.
"""

from __future__ import annotations

import json
from typing import Any

from mmcurate.stages.verify import VerifyParams, verify

PREFIX = "mmcurate"


def _settings(extra_info: dict[str, Any]) -> VerifyParams:
    raw = extra_info.get("verify")
    return VerifyParams.model_validate(json.loads(raw)) if raw else VerifyParams()


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict[str, Any] | None = None, **_: Any
) -> dict[str, float]:
    """verl's reward signature: `score` 1.0 when the verifier accepts the answer, else 0.0 (the unit
    of a pass rate); `parsed` says whether an answer could be extracted at all, `partial` is the
    verifier's graded score (IoU for boxes, 1 - CER for OCR)."""
    if not str(data_source).startswith(PREFIX):
        return _delegate(data_source, solution_str, ground_truth, extra_info)
    info = extra_info or {}
    if "answer_type" not in info:
        raise ValueError(f"data_source {data_source!r}: extra_info has no answer_type; is this an mmcurate rl file?")
    settings = _settings(info)
    kind = info["answer_type"]
    choices = info.get("choices")  # a list, or a numpy array when verl's rows came through pandas
    choices = [str(c) for c in choices] if choices is not None and len(choices) else None
    verdict = verify(solution_str, ground_truth, kind, settings.convention, choices=choices, **settings.kwargs(kind))
    return {"score": float(verdict.correct), "parsed": float(verdict.parsed), "partial": float(verdict.score)}


def _delegate(data_source: str, solution_str: str, ground_truth: str, extra_info: Any) -> dict[str, float]:
    try:
        from verl.utils.reward_score import default_compute_score
    except ImportError as exc:
        raise ValueError(
            f"data_source {data_source!r} is not an mmcurate one, and verl's default_compute_score is not importable"
        ) from exc
    result = default_compute_score(data_source, solution_str, ground_truth, extra_info)
    score = float(result["score"] if isinstance(result, dict) else result)
    return {"score": score, "parsed": float("nan"), "partial": score}  # verl's scorers do not say
