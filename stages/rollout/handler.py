"""What every rollout `ModelHandler` shares: the inference-args contract, metrics namespace, byte count."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from apache_beam.ml.inference.base import ModelHandler

from .params import SamplingParams, sampling_of
from .prompts import Messages

METRICS_NAMESPACE = "mmcurate_rollout"


class RolloutHandler(ModelHandler):
    """Base of the rollout backends: examples are message lists, predictions k response strings each,
    and the only inference argument is `{"sampling": {...}}`."""

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        extra = set(inference_args or {}) - {"sampling"}
        if extra:
            raise ValueError(f"rollout handlers take inference_args={{'sampling': {{...}}}} only, got {sorted(extra)}")
        sampling_of(SamplingParams(), inference_args)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def get_num_bytes(self, batch: Sequence[Messages]) -> int:
        return sum(len(json.dumps(m)) for m in batch)
