"""The run report: written at the end of a CLI run, opened in headless Chromium (Debian's, driven by
Playwright without a browser download): every section the run has data for is there, every plot and
thumbnail loads, nothing in the run's text can script the page; the sensitivity table is the
ledger's own arithmetic; two runs compare."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from mmcurate.cli import main

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCRIPT = "<script>window.pwned = 1</script><img src=x onerror='window.pwned = 2'>"

PAGE = """() => ({
  sections: [...document.querySelectorAll('section')].map(s => s.id),
  images: [...document.images].map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0})),
  pwned: window.pwned === undefined ? null : window.pwned,
  text: document.body.innerText,
})"""


@pytest.fixture(scope="module")
def browser() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (`make chromium`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _open(browser: Any, index: Path, shot: Path) -> dict[str, Any]:
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.goto(index.as_uri())
    page.wait_for_load_state("load")
    seen = page.evaluate(PAGE)
    page.screenshot(path=str(shot), full_page=True)
    page.close()
    assert shot.stat().st_size > 20_000
    # no broken image, no link to a file that is not there
    assert seen["images"] and all(i["ok"] for i in seen["images"]), [i for i in seen["images"] if not i["ok"]]
    assert all((index.parent / i["src"]).is_file() for i in seen["images"])
    return seen


def _ledger(run: Path, kind: str) -> list[dict[str, Any]]:
    return [r for f in sorted((run / "ledger" / kind).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_caption_run_report_and_a_comparison(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, browser: Any, capsys: pytest.CaptureFixture
) -> None:
    from mmcurate.demo import caption as demo

    monkeypatch.setenv("MMCURATE_REPORT", "1")
    corpus = demo.build_corpus(tmp_path / "corpus")
    (corpus / "cat.txt").write_text(f"A ginger cat {SCRIPT} with green eyes and long white whiskers.")
    config, _ = demo.demo_config()
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    out = tmp_path / "run"
    assert main(["caption", "--input", str(corpus), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    assert f"report:        {out / 'report' / 'index.html'}" in capsys.readouterr().out
    seen = _open(browser, out / "report" / "index.html", tmp_path / "caption-report.png")
    assert seen["sections"] == ["counts", "scores", "samples", "quarantined", "lineage"]
    assert seen["pwned"] is None and SCRIPT in seen["text"]  # the caption shows as text, never runs
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["kinds"]["caption"]["counts"]
    assert f"caption\t{counts['input']}\t{counts['kept']}\t{counts['dropped']}\t{counts['quarantined']}" in seen["text"]
    # kept thumbnails from the shards, dropped ones re-read from the sources: one per sampled record
    report = out / "report"
    kept = sorted(p.name for p in (report / "img").glob("kept-*.jpg"))
    assert len(kept) == min(6, counts["kept"])
    ledger = _ledger(out, "caption")
    too_small = [r["id"] for r in ledger if r["fate"]["reason"] == "too_small"]
    assert too_small and all((report / "img" / f"dropped-{i}.jpg").is_file() for i in too_small)
    for q in (r for r in ledger if r["fate"]["status"] == "quarantined"):
        assert q["id"] in seen["text"] and q["fate"]["reason"] in seen["text"]
    # sensitivity rows are the filters' own decisions over the ledger, thresholds 10 % looser / as run /
    # 10 % stricter: min_side's min 64 -> 57 / 64 / 71 (whole pixels), aspect_ratio's max 3 -> 3.3 / 3 / 2.7
    scored = [r["scores"] for r in ledger if r["scores"].get("width") is not None]

    def row(name: str, shown: str, keep: Any, limits: tuple[float, float, float]) -> str:
        shares = [f"{100 * sum(keep(x, t) for x in scored) / len(scored):.1f} %" for t in limits]
        return f"{name}\t{shown}\t{len(scored)}\t" + "\t".join(shares)

    side = lambda x, t: min(x["width"], x["height"]) >= t  # noqa: E731
    assert row("min_side", "min=64", side, (57, 64, 71)) in seen["text"]
    ratio = lambda x, t: x["aspect_ratio"] <= t  # noqa: E731
    assert row("aspect_ratio", "max=3", ratio, (3.3, 3.0, 2.7)) in seen["text"]

    # a stricter select of the same run, compared with it: what A keeps and B drops, with B's reason
    strict = tmp_path / "strict.yaml"
    strict.write_text(
        yaml.safe_dump({"filters": {**config.model_dump(mode="json")["filters"], "min_side": {"min": 500}}})
    )
    sel = tmp_path / "sel"
    assert main(["select", "--run", str(out), "--output", str(sel), "--config", str(strict), "--no-progress"]) == 0
    assert main(["report", str(out), str(sel), "--output", str(tmp_path / "cmp")]) == 0
    seen = _open(browser, tmp_path / "cmp" / "index.html", tmp_path / "compare.png")
    assert seen["sections"] == ["counts", "scores", "differ"]
    kept_a = {r["id"] for r in ledger if r["fate"]["status"] == "kept"}
    lost = [r["id"] for r in _ledger(sel, "caption") if r["fate"]["reason"] == "too_small" and r["id"] in kept_a]
    assert lost and all(f"{i}\ttoo_small" in seen["text"] for i in lost)


def test_video_demo_report_has_contact_sheets_and_hours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, browser: Any
) -> None:
    monkeypatch.setenv("MMCURATE_REPORT", "1")
    assert main(["demo", "--corpus", "video", "--workdir", str(tmp_path), "--no-progress"]) == 0
    out = tmp_path / "video-output"
    seen = _open(browser, out / "report" / "index.html", tmp_path / "video-report.png")
    assert seen["sections"] == ["counts", "scores", "samples", "quarantined", "video", "lineage"]
    clips = [r for r in _ledger(out, "clip") if r["fate"]["status"] == "kept"]
    hours = sum(r["duration"] for r in clips) / 3600
    assert f"{len(clips)} clips kept, {hours:.3f} hours." in seen["text"]
    sheets = sorted((out / "report" / "img").glob("sheet-*.jpg"))
    assert len(sheets) == min(6, len(clips))
    from PIL import Image

    with Image.open(sheets[0]) as im:  # three frames side by side
        assert im.width > 2 * im.height
    dropped = [r for r in _ledger(out, "clip") if r["fate"]["status"] == "dropped"]
    assert any(
        (out / "report" / "img" / f"dropped-{r['id']}.jpg").is_file() for r in dropped
    )  # decoded from the source


def test_no_report_flag_overwrite_and_a_run_in_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--no-report writes none; --overwrite removes the earlier run's report with the rest of what it
    wrote (a stale page must not describe data that is gone); a folder without a manifest has none."""
    from PIL import Image

    from mmcurate.report import build_report

    monkeypatch.setenv("MMCURATE_REPORT", "1")
    corpus = tmp_path / "in"
    corpus.mkdir()
    Image.new("RGB", (96, 96), (10, 120, 200)).save(corpus / "a.jpg")
    (corpus / "a.txt").write_text("A plain blue square on its own, nothing else at all.")
    out = tmp_path / "out"
    args = ["caption", "--input", str(corpus), "--output", str(out), "--no-progress", "--config", str(_rules(tmp_path))]
    assert main(args) == 0 and (out / "report" / "index.html").is_file()
    assert main([*args, "--overwrite", "--no-report"]) == 0
    assert not (out / "report").exists() and (out / "manifest.json").is_file()
    (out / "manifest.json").unlink()  # what a run in progress looks like: no manifest yet
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        build_report(str(out))


def _rules(tmp_path: Path) -> Path:
    cfg = tmp_path / "rules.yaml"
    cfg.write_text("filters:\n  min_side: {min: 64}\n")
    return cfg


@pytest.mark.parametrize(
    ("corpus", "section", "kind"),
    [("interleaved", "documents", "document"), ("ocr", "boxes", "ocr"), ("grounding", "boxes", "grounding")],
)
def test_each_other_demo_report_opens_with_its_own_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, browser: Any, corpus: str, section: str, kind: str
) -> None:
    """The interleaved, OCR and grounding demos' reports in the same browser: the corpus's own
    section (documents with their images in place; images with boxes drawn) and every image loads."""
    monkeypatch.setenv("MMCURATE_REPORT", "1")
    assert main(["demo", "--corpus", corpus, "--workdir", str(tmp_path), "--no-progress"]) == 0
    out = tmp_path / f"{corpus}-output"
    seen = _open(browser, out / "report" / "index.html", tmp_path / f"{corpus}-report.png")
    assert {"counts", section, "lineage"} <= set(seen["sections"]), seen["sections"]
    kept = [r for r in _ledger(out, kind) if r["fate"]["status"] == "kept"]
    assert kept and any(r["id"] in seen["text"] for r in kept)  # sampled kept records, named by id
    manifest = json.loads((out / "manifest.json").read_text())
    assert f"{manifest['kinds'][kind]['counts']['kept']}" in seen["text"]
