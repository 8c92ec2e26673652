"""One table of every benchmark's verdicts: bench/results.md and bench/results.json, written by
`bench/run.py` after its benchmarks from every bench/out/NAME.json there is (so a table holds the
latest figures of each path, whether this call ran it or an earlier one did), and copied into the
README between its `bench:start` / `bench:end` markers. A benchmark with no report in bench/out/
(a fresh checkout, which ignores bench/out/) keeps its rows from the committed results.json, each
with the date and machine it was measured on.

Each benchmark states its targets as checks named `METRIC>=TARGET` (or `<=`), e.g.
`beam_vs_bare>=0.8`: the row gives the metric's measured value (found by name in its report), the
target, and pass or miss (a report's `measured` map, {check: value}, names the figure where the
metric's name alone does not find it); checks without a target (`no_records_lost`) are pass/miss alone. A
benchmark that could not run a line here (the GPU lines without CUDA) lists it under `not_measured`
({check: why}): the row says "not measured" and why, neither pass nor miss.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"
CHECK = re.compile(r"^(?P<metric>.+?)(?P<op>>=|<=)(?P<target>[0-9.,_]+)(?P<pct>%?)x?$")
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _find(report: Any, key: str) -> float | None:
    """The first number stored under `key` anywhere in a report (depth first), where a key may also
    name a path: `document_per_s_per_core` is `per_s_per_core` under a `document` entry."""
    if isinstance(report, dict):
        if (n := _number(report.get(key))) is not None:
            return n
        for k, v in report.items():
            if isinstance(v, dict) and key.startswith(f"{k}_") and (n := _find(v, key[len(k) + 1 :])) is not None:
                return n
        return _first(report.values(), key)
    return _first(report, key) if isinstance(report, list) else None


def _first(values: Any, key: str) -> float | None:
    for v in values:
        if (n := _find(v, key)) is not None:
            return n
    return None


def checks_of(report: dict[str, Any]) -> dict[str, bool]:
    """A report's checks; a report that states one `ratio` and its `target` (>=) has that one."""
    if isinstance(report.get("checks"), dict):
        return report["checks"]
    ratio, target = report.get("ratio"), report.get("target")
    if isinstance(ratio, int | float) and isinstance(target, int | float):
        return {f"ratio>={target:g}": ratio >= target}
    return {}


def rows_of(name: str, report: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One row per check of one benchmark's report."""
    for check, ok in sorted(checks_of(report).items()):
        m = CHECK.match(check)
        row: dict[str, Any] = {"benchmark": name, "check": check, "pass": bool(ok), "measured": None, "target": None}
        if m:
            target = float(m["target"].replace(",", "").replace("_", "")) / (100 if m["pct"] else 1)
            metric = m["metric"].split("/")[-1]
            row.update(metric=m["metric"], op=m["op"], target=target, measured=_find(report, metric))
        stated = _number((report.get("measured") or {}).get(check))
        if stated is not None:  # the benchmark says which of its figures the check reads
            row["measured"] = stated
        yield row
    for check, why in sorted((report.get("not_measured") or {}).items()):
        m = CHECK.match(check)
        yield {"benchmark": name, "check": check, "pass": None, "measured": None, "why": str(why),
               "target": float(m["target"].replace(",", "").replace("_", "")) if m else None,
               "op": m["op"] if m else None}  # fmt: skip


def collect(out_dir: Path = OUT_DIR, earlier: Path | None = BENCH_DIR / "results.json") -> dict[str, Any]:
    """Every report in `out_dir`: its rows, when and where it was measured; the benchmarks that have
    no report there keep their rows from `earlier` (the committed table)."""
    benches = []
    for path in sorted(out_dir.glob("*.json")):
        try:
            report = json.loads(path.read_text())
        except ValueError:
            continue
        if not isinstance(report, dict) or not checks_of(report):
            continue
        env = report.get("env") or report.get("environment") or {}
        benches.append({"benchmark": path.stem, "created": report.get("created"), "passed": report.get("passed"),
                        "cores": env.get("cpu_count"), "cpu": env.get("cpu_model"), "gpu": env.get("gpu"),
                        "host": env.get("host"), "rows": list(rows_of(path.stem, report))})  # fmt: skip
    fresh = {b["benchmark"] for b in benches}
    benches += [b for b in _earlier(earlier) if b.get("benchmark") not in fresh]
    return {"benchmarks": sorted(benches, key=lambda b: b["benchmark"])}


def _earlier(path: Path | None) -> list[dict[str, Any]]:
    try:
        benches = json.loads(path.read_text()).get("benchmarks") if path else None
    except (OSError, ValueError, AttributeError):
        return []
    return [b for b in benches if isinstance(b, dict) and isinstance(b.get("rows"), list)] if benches else []


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def markdown(results: dict[str, Any]) -> str:
    lines = ["| benchmark | check | measured | target | verdict | measured on |", "|---|---|---|---|---|---|"]
    for b in results["benchmarks"]:
        where = f"{b.get('created') or '?'}, {b.get('cores') or '?'} cores{', ' + b['cpu'] if b.get('cpu') else ''}"
        where += f", GPU {b['gpu']}" if b.get("gpu") else ", no GPU"
        for r in b["rows"]:
            target = f"{r.get('op', '')} {_fmt(r['target'])}" if r.get("target") is not None else ""
            verdict = "pass" if r["pass"] else "**miss**"
            if r["pass"] is None:
                verdict = f"not measured ({r.get('why') or 'not run here'})"
            lines.append(
                f"| {b['benchmark']} | `{r['check']}` | {_fmt(r['measured'])} | {target} | {verdict} | {where} |"
            )
    return "\n".join(lines) + "\n"


def write_results(
    out_dir: Path = OUT_DIR, readme: Path | None = BENCH_DIR.parent / "README.md", dest: Path = BENCH_DIR
) -> Path:
    """DEST/results.md and .json from every report in `out_dir` (and DEST/results.json's rows of the
    benchmarks with none there); the README's table replaced."""
    results = collect(out_dir, dest / "results.json")
    table = markdown(results)
    (dest / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    md = dest / "results.md"
    md.write_text(
        "# Benchmark results\n\nWritten by `make bench` (bench/results.py) from bench/out/*.json.\n\n" + table
    )
    if readme is not None and readme.exists():
        text = readme.read_text()
        if START in text and END in text:
            head, rest = text.split(START, 1)
            readme.write_text(head + START + "\n" + table + END + rest.split(END, 1)[1])
    return md
