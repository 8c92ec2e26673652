"""`mmcurate report RUN [OTHER]`: a static HTML page about a finished run, for a person to look at
before training on it (and written at the end of every CLI run, unless `--no-report`).

One generic renderer for every corpus, built from what every run writes (manifest v2, ledgers,
shard index, overlays, metrics): a section appears only where the run has its data. The page is a
Jinja2 template (`templates/report.html.j2`, autoescaped) with matplotlib plots and thumbnails as
files beside it under `RUN/report/`, so it opens from disk or object storage with no server. It is
not part of a run's byte-identical outputs (it is written after the manifest and never listed in it).
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader

from mmcurate.pipelines.layout import REPORTS
from mmcurate.stages.writers import atomic_write, join

from .sections import build_sections, compare_sections

REPORT_DIR, COMPARE_DIR = REPORTS


def _env() -> Environment:
    # autoescape always: captions, errors and sources are untrusted text (a caption may hold <script>)
    return Environment(loader=PackageLoader("mmcurate.report", "templates"), autoescape=True)


class _Writer:
    """Files under the report folder; the template names them relative to the page."""

    def __init__(self, out: str) -> None:
        self.out, self.written = out.rstrip("/"), 0

    def __call__(self, rel: str, data: bytes) -> str:
        atomic_write(join(self.out, rel), data)
        self.written += 1
        return rel


def build_report(run_root: str, out: str | None = None, per_reason: int = 6) -> str:
    """Render the report of a finished run into `out` (default `RUN/report/`); returns the page's URI."""
    from .data import load_run

    data = load_run(run_root)
    if out is None:  # the run's own report folder: an earlier report's pictures must not linger in it
        from mmcurate.pipelines.corpus import remove_tree

        out = join(run_root.rstrip("/"), REPORT_DIR)
        remove_tree(out)
    write = _Writer(out)
    ctx: dict[str, Any] = build_sections(data, write, per_reason)
    page = _env().get_template("report.html.j2").render(**ctx)
    write("index.html", page.encode("utf-8"))
    return join(out, "index.html")


def compare_report(run_a: str, run_b: str, out: str | None = None) -> str:
    """Two runs of one corpus side by side (`mmcurate report A B`), written to `out` (default
    `A/report-compare/`); returns the page's URI."""
    from .data import load_run

    a, b = load_run(run_a), load_run(run_b)
    if a.corpus != b.corpus:
        raise ValueError(f"mmcurate report A B compares runs of one corpus: {a.corpus} and {b.corpus}")
    out = out or join(run_a.rstrip("/"), COMPARE_DIR)
    write = _Writer(out)
    page = _env().get_template("compare.html.j2").render(**compare_sections(a, b, write))
    write("index.html", page.encode("utf-8"))
    return join(out, "index.html")
