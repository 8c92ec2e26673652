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
