"""The pipelines on Beam's portable runner (the path Flink, Spark and Dataflow use to drive Python
workers): PortableRunner + the local job service + an EXTERNAL worker pool, in a network namespace
with only loopback (Beam's gRPC servers bind to every interface). Each run's output must be
byte-identical to the DirectRunner's (the manifest's `created` aside), its accounting exact, its
metrics in the run summary; a portable run whose worker machine dies (SIGKILL of the pool's process
group at a fail point) and is resumed gives the uninterrupted output.

All portable runs share one namespace, one job service and one pool (`tests/portable.py`), so the
servers start once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from portable import loopback_namespace, wheel_worker_env
from test_resume import assert_same_run, caption_corpus, mmcurate, rules, shard_keys, video_corpus

from mmcurate.pipelines.spool import FAILPOINT_ENV

PORTABLE = Path(__file__).with_name("portable.py")
REPO = Path(__file__).resolve().parents[1]
NAMESPACE, WHY_NOT = loopback_namespace()
pytestmark = pytest.mark.skipif(NAMESPACE is None, reason=f"portable runner tests: {WHY_NOT}")
CLI = [sys.executable, "-m", "mmcurate.cli"]
DEMOS = ("interleaved", "ocr", "grounding")
"""Run through their demo commands: the corpus each builds, its embedded config (models included)."""


def _passrate_inputs(root: Path) -> list[str]:
    """Three questions on one image and a tiny random Llama (rollouts are seeded, so both runners
    sample the same answers)."""
    import tiny_models
    from PIL import Image

    root.mkdir(parents=True)
    Image.new("RGB", (32, 24), (200, 30, 30)).save(root / "img.png")
    rows = [("how many cat shown ?", "2", "number"), ("which animal shown ?", "cat", "text"),
            ("which color box left ?", "purple", "text")]  # fmt: skip
    lines = [json.dumps({"question": q, "answer": a, "answer_type": t, "images": ["img.png"]}) for q, a, t in rows]
    (root / "questions.jsonl").write_text("\n".join([*lines, "{not json"]) + "\n")
    model = tiny_models.build_tiny_llama(root / "model")
    config = {"rollout": {"backend": "transformers",
                          "transformers": {"model": str(model), "device": "cpu", "batch_size": 4},
                          "sampling": {"k": 4, "temperature": 1.0, "max_tokens": 6, "seed": 0},
                          "prompt": {"image_placeholder": "<|image|>"}}}  # fmt: skip
    (root / "rl.yaml").write_text(yaml.safe_dump(config))
    return ["rl", "--input", str(root / "questions.jsonl"), "--config", str(root / "rl.yaml")]


def _aside(out: Path, to: Path) -> Path:
    shutil.move(str(out), str(to))
    return to


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """DirectRunner references, then every portable run in one namespace. The output paths are the
    same for both runners (moved aside in between), since a ledger names its inputs and outputs."""
    tmp = tmp_path_factory.mktemp("portable")
    jobs: dict[str, list[str]] = {
        "caption": ["caption", "--input", str(caption_corpus(tmp / "captions")), "--config", str(rules(tmp))],
        "video": ["video", "--input", str(video_corpus(tmp / "videos"))],
        "rl": _passrate_inputs(tmp / "questions"),
    }
    direct = {}
    for name, args in jobs.items():
        mmcurate(*args, "--output", str(tmp / name), "--no-report")
        direct[name] = _aside(tmp / name, tmp / f"{name}-direct")
    commands = [{"argv": [*CLI, *args, "--output", str(tmp / name), "--no-progress", "--no-report"]}
                for name, args in jobs.items()]  # fmt: skip
    for name in DEMOS:  # the other corpora's demos (their builders write the same corpus each time)
        demo = ["demo", "--corpus", name, "--workdir", str(tmp / f"{name}-demo"), "--no-report"]
        mmcurate(*demo)
        direct[name] = _aside(tmp / f"{name}-demo" / f"{name}-output", tmp / f"{name}-direct")
        commands.append({"argv": [*CLI, *demo, "--no-progress"]})
    killed = [*CLI, *jobs["caption"], "--output", str(tmp / "resumed"), "--no-progress", "--no-report"]
    commands += [
        {
            "argv": killed,
            "pool_env": {FAILPOINT_ENV: "spooled:2"},
            "timeout": 300,
            "count": str(tmp / "resumed" / "_work" / "spooled" / "part-*.json"),
        },
        {"argv": [*killed, "--resume"]},
    ]
    (tmp / "commands.json").write_text(json.dumps(commands))
    worker = wheel_worker_env(tmp, REPO)
    env = dict(os.environ, WORKER_PYTHON=str(worker))
    subprocess.run([*(NAMESPACE or []), sys.executable, str(PORTABLE), str(tmp / "commands.json"),
                    str(tmp / "results.json")], check=True, timeout=1500, env=env)  # fmt: skip
    results = json.loads((tmp / "results.json").read_text())
    outputs = {**{n: tmp / n for n in jobs}, **{n: tmp / f"{n}-demo" / f"{n}-output" for n in DEMOS}}
    names = [*jobs, *DEMOS, "killed", "resumed"]
    return {"tmp": tmp, "direct": direct, "worker": worker, "outputs": outputs,
            "results": dict(zip(names, results, strict=True))}  # fmt: skip


def test_the_workers_run_mmcurate_from_its_wheel_not_the_checkout(runs: dict[str, Any]) -> None:
    """The worker pool's environment (where every portable run above ran its DoFns) holds mmcurate
    only as the built wheel, with its package data (configs, report templates); the checkout is not
    on its path and the editable install's finder is not loaded."""
    probe = (
        "import json, sys, mmcurate, mmcurate.pipelines.config as c, mmcurate.report as r; "
        "print(json.dumps([mmcurate.__file__, str(c.DEFAULTS_DIR), r.__file__, sys.path, "
        "[m for m in sys.modules if 'editable' in m]]))"
    )
    done = subprocess.run([str(runs["worker"]), "-c", probe], capture_output=True, text=True, timeout=120,
                          cwd=runs["tmp"], env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    module, defaults, report, path, editable = json.loads(done.stdout)
    site = runs["worker"].parents[1] / "lib"
    assert Path(module).is_relative_to(site) and (Path(defaults) / "caption.yaml").is_file()
    assert (Path(report).parent / "templates" / "report.html.j2").is_file()
    assert editable == [] and str(REPO) not in {str(Path(p).resolve()) for p in path if p}
    assert not [p for p in path if p and Path(p, "mmcurate").is_dir() and not Path(p).is_relative_to(site)]


@pytest.mark.parametrize("corpus", ["caption", "video", "rl", *DEMOS])
def test_portable_run_is_byte_identical_to_the_direct_runner(runs: dict[str, Any], corpus: str) -> None:
    result = runs["results"][corpus]
    assert result["rc"] == 0, result["tail"]
    out, reference = runs["outputs"][corpus], runs["direct"][corpus]
    assert_same_run(reference, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["accounting_ok"], manifest["kinds"]
    counters = json.loads((out / "metrics.json").read_text())["counters"]
    direct = json.loads((reference / "metrics.json").read_text())["counters"]
    ours = sorted(k for k in direct if k.startswith("mmcurate/") and ".pid" not in k)  # pids: whichever worker
    assert ours and {k: counters.get(k) for k in ours} == {k: direct[k] for k in ours}  # committed metrics


def test_portable_run_killed_with_its_worker_resumes_to_the_uninterrupted_output(runs: dict[str, Any]) -> None:
    killed, resumed = runs["results"]["killed"], runs["results"]["resumed"]
    assert killed["rc"] not in (0, 124), f"the fail point did not stop the run: {killed['tail'][-500:]}"
    assert resumed["rc"] == 0, resumed["tail"]
    out, reference = runs["tmp"] / "resumed", runs["direct"]["caption"]
    assert_same_run(reference, out)
    keys = shard_keys(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(keys) == len(set(keys)) == manifest["kinds"]["caption"]["counts"]["kept"]  # every sample once
    units_read = json.loads((out / "metrics.json").read_text())["counters"].get("mmcurate/units.read", 0)
    spooled = killed["counted"]
    assert 2 <= spooled < 6 and units_read == 6 - spooled  # the resume read only the units not spooled
