"""plan: how well `mmcurate plan` predicts a full run. On 8 generated tar shards of 250 caption
images each (rule filters, 256 px output), the plan's sample (--plan-sample records, default 200,
from the first shard) is scaled to the whole input and compared with a full run of all 2,000
records measured the same way (Beam's per-step execution time, one in-process worker):
  per stage: predicted seconds per record / measured seconds per record,
  the total:  predicted core-hours / measured core-hours, and predicted / actual output bytes.
Targets: every stage with at least 5 % of the work within a factor of 2 (0.5 <= ratio <= 2), and the
total and the output size within a factor of 2. The full input count must equal the records read.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from common import VERDICT, caption_corpus, created, environment, write_report
from scale import RULES  # the scale benchmark's rule filters, 256 px working and output side

from mmcurate.pipelines.caption import CORPUS
from mmcurate.pipelines.config import load_config
from mmcurate.plan import extrapolate, full_count, measure

SHARE = 0.05


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("plan")
    group.add_argument("--plan-sample", type=int, default=200, help="records of the plan's sample (default 200)")
    group.add_argument("--plan-images", type=int, default=2000, help="records of the full run (default 2000)")


def _ratios(predicted: dict[str, Any], full: dict[str, Any]) -> dict[str, dict[str, float]]:
    busy = sum(v["seconds"] for v in full["stages"].values()) or 1.0
    out = {}
    for name, v in full["stages"].items():
        measured = v["seconds"] / max(1, full["records"])
        guess = predicted["per_record_s"].get(name, 0.0)
        out[name] = {"share": round(v["seconds"] / busy, 4), "predicted_s_per_record": round(guess, 6),
                     "measured_s_per_record": round(measured, 6),
                     "ratio": round(guess / measured, 3) if measured else None}  # fmt: skip
    return out


def run(args: argparse.Namespace) -> bool:
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    corpus = caption_corpus(args.plan_images, 8, seed=3)
    cfg = corpus.parent / f"{corpus.name}-plan.yaml"
    cfg.write_text(RULES)
    config = load_config(str(cfg), CORPUS.config_class, CORPUS.defaults)
    inputs = [str(corpus / "*.tar")]
    units = CORPUS.list_units(inputs, config)
    counted, uncounted = full_count(units)
    print(f"plan: {len(units)} shards, {counted} records counted from tar headers ({len(uncounted)} uncounted)")
    sample = measure(CORPUS, config, inputs, units, args.plan_sample)
    predicted = extrapolate(sample, counted, 1, 1, config)
    full = measure(CORPUS, config, inputs, units, args.plan_images, warm_up=False)  # warmed by the plan's run
    stages = _ratios(predicted, full)
    busy_full = sum(v["seconds"] for v in full["stages"].values())
    total_ratio = predicted["core_hours"] * 3600 / busy_full if busy_full else None
    bytes_ratio = predicted["output_bytes"] / full["bytes_out"] if full["bytes_out"] else None
    big = {k: v["ratio"] for k, v in stages.items() if v["share"] >= SHARE and v["ratio"] is not None}
    checks = {
        "count_equals_records_read": counted == full["records"],
        "stage_ratio_max<=2": max(big.values(), default=0) <= 2,
        "stage_ratio_min>=0.5": min(big.values(), default=0) >= 0.5,
        "total_ratio<=2": total_ratio is not None and 0.5 <= total_ratio <= 2,
        "bytes_ratio<=2": bytes_ratio is not None and 0.5 <= bytes_ratio <= 2,
    }
    print(f"  {'stage':18s} {'share':>6s} {'plan s/rec':>11s} {'full s/rec':>11s} {'ratio':>6s}")
    for name, v in sorted(stages.items(), key=lambda kv: -kv[1]["share"]):
        print(f"  {name:18s} {v['share']:6.1%} {v['predicted_s_per_record']:11.5f} "
              f"{v['measured_s_per_record']:11.5f} {v['ratio'] if v['ratio'] is not None else '-':>6}")  # fmt: skip
    print(f"  total: predicted / measured = {total_ratio or 0:.2f}; output bytes {bytes_ratio or 0:.2f}")
    for name, ok in checks.items():
        print(f"  {name}: {VERDICT[ok]}")
    report = {
        "benchmark": "plan", "created": created(), "records": full["records"], "sample_records": sample["records"],
        "stages": stages, "stage_ratio_max": max(big.values(), default=None),
        "stage_ratio_min": min(big.values(), default=None), "total_ratio": round(total_ratio or 0, 3),
        "bytes_ratio": round(bytes_ratio or 0, 3), "plan": predicted, "checks": checks, "passed": all(checks.values()),
        "env": environment(cores, load_before, os.getloadavg()[0]),
    }  # fmt: skip
    write_report("plan", report)
    return report["passed"]
