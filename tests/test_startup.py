"""Start-up: a run whose filters need no model imports no heavy library, in the driver or a worker.

Every process of the run (the CLI, Beam's SDK worker processes, the video decode children) starts
with a `sitecustomize` that logs its command line and any import of a watched library, with the
stack that imported it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_resume import RULES, caption_corpus

HEAVY = ("torch", "open_clip", "transformers", "rapidocr", "rapidocr_onnxruntime", "onnxruntime", "decord")

HOOK = f"""
import os, sys, traceback
_LOG = os.environ["MMCURATE_IMPORT_LOG"]
_HEAVY = {HEAVY!r}
with open("/proc/self/cmdline", "rb") as src, open(os.path.join(_LOG, f"argv-{{os.getpid()}}.txt"), "wb") as f:
    f.write(src.read().replace(b"\\0", b" "))

class _Watch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _HEAVY:
            with open(os.path.join(_LOG, f"heavy-{{os.getpid()}}.txt"), "a") as f:
                f.write(name + "\\n" + "".join(traceback.format_stack()) + "\\n")
        return None

sys.meta_path.insert(0, _Watch())
"""


def watched_env(tmp: Path) -> tuple[dict[str, str], Path]:
    hook, log = tmp / "hook", tmp / "log"
    hook.mkdir()
    log.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
           "MMCURATE_IMPORT_LOG": str(log)}  # fmt: skip
    return env, log


def test_the_watch_sees_an_import_of_torch(tmp_path: Path) -> None:
    env, log = watched_env(tmp_path)
    subprocess.run([sys.executable, "-c", "import torch"], env=env, check=True, timeout=120)
    (heavy,) = log.glob("heavy-*.txt")
    assert heavy.read_text().startswith("torch\n")


def test_caption_run_without_model_filters_imports_no_heavy_library_in_any_process(tmp_path: Path) -> None:
    corpus = caption_corpus(tmp_path / "in", shards=4, per_shard=6)
    config = tmp_path / "rules.yaml"
    config.write_text(RULES)
    env, log = watched_env(tmp_path)
    cmd = [sys.executable, "-m", "mmcurate.cli", "caption", "--input", str(corpus), "--config", str(config),
           "--output", str(tmp_path / "out"), "--no-progress",
           "--direct_num_workers=2", "--direct_running_mode=multi_processing"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    argvs = [p.read_text() for p in log.glob("argv-*.txt")]
    workers = [a for a in argvs if "sdk_worker_main" in a]
    assert len(workers) >= 2, argvs  # the workers ran, with the watch installed
    heavy = {p.name: p.read_text()[:3000] for p in log.glob("heavy-*.txt")}
    assert not heavy, heavy


def test_every_recipe_module_imports_no_model_library(tmp_path: Path) -> None:
    """The recipes (and the CLI over them) import RunInference and the model handlers only when a
    configured filter needs a model; decord is the video corpus's own decoder, so it is allowed there."""
    env, log = watched_env(tmp_path)
    code = "import mmcurate.cli, mmcurate.pipelines.caption, mmcurate.pipelines.video, mmcurate.pipelines.video_select"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    heavy = {p.name: p.read_text()[:3000] for p in log.glob("heavy-*.txt")}
    assert not heavy, heavy
