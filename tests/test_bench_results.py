"""bench/results.py: the one table of every benchmark's checks, read from the reports the benchmarks
write (bench/out/NAME.json), and copied into a README between its markers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "results.py"


def _results():
    spec = importlib.util.spec_from_file_location("bench_results", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_checks_become_rows_with_their_measured_values_and_the_readme_table(tmp_path: Path) -> None:
    results = _results()
    out = tmp_path / "out"
    out.mkdir()
    report = {"created": "2026-12-03T08:00:00", "passed": False,
              "env": {"cpu_count": 2, "cpu_model": "Test CPU", "gpu": "", "host": "h"},
              "figures": {"beam_vs_bare": 0.93, "per_core": {"images_per_s_per_core": 250.0}},
              "checks": {"beam_vs_bare>=0.8": True, "images_per_s_per_core>=300": False,
                         "no_records_lost": True}}  # fmt: skip
    (out / "caption.json").write_text(json.dumps(report))
    (out / "notes.json").write_text(json.dumps({"no": "checks"}))  # not a benchmark report: left out
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{results.START}\nold table\n{results.END}\nafter\n")
    results.write_results(out, readme, dest=tmp_path)
    (bench,) = json.loads((tmp_path / "results.json").read_text())["benchmarks"]
    rows = {r["check"]: r for r in bench["rows"]}
    assert (rows["beam_vs_bare>=0.8"]["measured"], rows["beam_vs_bare>=0.8"]["target"]) == (0.93, 0.8)
    assert rows["images_per_s_per_core>=300"]["measured"] == 250.0 and not rows["images_per_s_per_core>=300"]["pass"]
    assert rows["no_records_lost"]["target"] is None and rows["no_records_lost"]["pass"]
    text = readme.read_text()
    assert "old table" not in text and text.startswith("intro\n") and text.endswith("after\n")
    where = "2026-12-03T08:00:00, 2 cores, Test CPU, no GPU"
    assert f"| caption | `images_per_s_per_core>=300` | 250 | >= 300 | **miss** | {where} |" in text
    assert (tmp_path / "results.md").read_text().endswith(text.split(results.START)[1].split(results.END)[0].lstrip())


def test_lines_not_run_here_say_so_and_earlier_benchmarks_keep_their_rows(tmp_path: Path) -> None:
    """A GPU line without CUDA is 'not measured' (neither pass nor miss); a benchmark with no report
    in bench/out (a fresh checkout) keeps its rows and date from the committed results.json, and a
    fresh report replaces the earlier rows of its own benchmark."""
    results = _results()
    out = tmp_path / "out"
    out.mkdir()
    env = {"cpu_count": 2, "cpu_model": "Test CPU", "gpu": ""}
    (out / "models.json").write_text(json.dumps({
        "created": "2026-12-03T10:00:00", "env": env, "checks": {"no_records_lost": True, "speedup>=5x": False},
        "results": {"360p": {"speedup": 6.2}, "720p": {"speedup": 4.1}}, "measured": {"speedup>=5x": 4.1},
        "not_measured": {"gpu_beam_end_to_end>=3000": "no CUDA device here"}}))  # fmt: skip
    earlier = {"benchmarks": [
        {"benchmark": "scale", "created": "2026-12-01T08:00:00", "cores": 2, "cpu": "Old CPU", "gpu": "",
         "rows": [{"benchmark": "scale", "check": "time_8000_over_800<=10.5", "pass": True, "measured": 6.0,
                   "target": 10.5, "op": "<="}]},
        {"benchmark": "models", "created": "2026-11-01T08:00:00", "rows": [
            {"benchmark": "models", "check": "stale", "pass": False, "measured": None, "target": None}]}]}  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps(earlier))
    results.write_results(out, None, dest=tmp_path)
    benches = {b["benchmark"]: b for b in json.loads((tmp_path / "results.json").read_text())["benchmarks"]}
    assert sorted(benches) == ["models", "scale"]
    checks = [r["check"] for r in benches["models"]["rows"]]
    assert checks == ["no_records_lost", "speedup>=5x", "gpu_beam_end_to_end>=3000"]
    speedup = benches["models"]["rows"][1]  # the figure the report names, not the first `speedup` found
    assert (speedup["measured"], speedup["target"], speedup["pass"]) == (4.1, 5.0, False)
    gpu = benches["models"]["rows"][2]
    assert gpu["pass"] is None and (gpu["op"], gpu["target"]) == (">=", 3000.0)
    assert benches["scale"]["created"] == "2026-12-01T08:00:00"
    table = (tmp_path / "results.md").read_text()
    assert "| models | `gpu_beam_end_to_end>=3000` |  | >= 3,000 | not measured (no CUDA device here) |" in table
    assert "| scale | `time_8000_over_800<=10.5` | 6 | <= 10.5 | pass | 2026-12-01T08:00:00, 2 cores, Old CPU" in table
    assert "stale" not in table
