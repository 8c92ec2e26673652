"""The Label Studio round trip against a real server on 127.0.0.1 (its own cached virtual env,
annotation/server.py): push a video run's clips with the models' guesses, a server stopped after the
first batch and restarted mid-push, two real annotators (each created on the server, each with its
own token) answering through the API, a gold task, pull, agreement, the overlay and `select` on it.
"""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import tarfile
import threading
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
import yaml

from mmcurate.annotation import server as ls_server
from mmcurate.annotation.client import Pusher, push, queue_rows
from mmcurate.annotation.derived import TEMPLATES
from mmcurate.annotation.label_configs import config_hash, label_config
from mmcurate.annotation.predictions import motion_confidence
from mmcurate.cli import main
from mmcurate.demo.video import Segment, make_video

pytestmark = pytest.mark.slow
MEDIA_URL = "/data/local-files/?d=media"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("label-studio")
    try:
        ls_server.ensure_env(log=root / "install.log")
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"Label Studio {ls_server.VERSION} could not be installed here: {exc}")
    with ls_server.running(root, ls_server.free_port()) as s:
        yield s


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A video run of three one-scene videos (no model filters: fast), its annotation queue 3 clips."""
    root = tmp_path_factory.mktemp("annotate-run")
    corpus = root / "in"
    corpus.mkdir()
    for i, kind in enumerate(("pan_left", "static", "tilt_up")):
        make_video(corpus / f"v{i}.mp4", [Segment(kind, 75, seed=i)], size=(320, 240))
    cfg = root / "cfg.yaml"
    cfg.write_text("filters: {}\n")
    out = root / "out"
    assert main(["video", "--input", str(corpus), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    return out


def _client(server: ls_server.Server, token: str | None = None):
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=server.url, api_key=token or server.token)


CINEMATIC = ("camera_motion", "shot_size")


def _answer(client, task_id: int, answers: dict[str, str], lead: float) -> None:
    result = [{"from_name": k, "to_name": "video", "type": "choices", "value": {"choices": [v]}}
              for k, v in answers.items()]  # fmt: skip
    client.annotations.create(id=task_id, result=result, lead_time=lead)


def test_round_trip_push_restart_annotate_pull_select(server, run: Path, tmp_path: Path) -> None:
    from mmcurate.annotate import pull_overlay

    rows = queue_rows(str(run))
    assert len(rows) == 3
    admin = _client(server)
    restarted = []

    def stop_after_first(family: str, batch: int) -> None:
        """A deterministic cut: the server goes down right after the first batch is in; it comes
        back while the push is retrying the second."""
        if batch == 1 and not restarted:
            server.stop()
            restarted.append(threading.Thread(target=server.start, daemon=True))
            restarted[0].start()

    pusher = Pusher(admin, str(run), server.media, MEDIA_URL, "t-run", batch_size=1, overlap=2,
                    after_batch=stop_after_first)  # fmt: skip
    (summary,) = push(pusher, ["cinematic"])
    restarted[0].join(timeout=300)
    assert not restarted[0].is_alive() and server.healthy()
    pid = summary.project
    tasks = list(admin.tasks.list(project=pid, fields="all"))
    assert sorted(t.data["clip_id"] for t in tasks) == sorted(r["clip_id"] for r in rows)  # none twice, none lost
    assert (summary.imported, summary.batches, summary.already) == (3, 3, 0)
    # the tasks carry the models' camera-motion guess, and the clip plays from the served folder
    by_clip = {t.data["clip_id"]: t for t in tasks}
    for row in rows:
        task = by_clip[row["clip_id"]]
        guess = row["pre_annotations"]["camera_motion"]
        preds = list(admin.predictions.list(task=task.id))
        assert [p.result[0]["value"]["choices"] for p in preds] == ([[guess]] if guess else [])
        # its score is the flow's confidence in the guess; the flow statistics ride in the task's data
        conf = motion_confidence(row["scores"], guess)
        assert [p.score for p in preds] == [pytest.approx(conf)] and 0.0 <= conf <= 1.0
        assert task.data["flow"]["flow_speed"] == pytest.approx(row["scores"]["flow_speed"], abs=1e-5)
        with tarfile.open(run / row["shard"]) as tar:  # the served file is the shard's member, byte for byte
            assert (server.media / f"{row['clip_id']}.mp4").read_bytes() == tar.extractfile(f"{row['key']}.mp4").read()
        assert task.data["video"] == f"{MEDIA_URL}/{row['clip_id']}.mp4"
    # a second push finds its project by title and config hash and adds nothing
    again = Pusher(admin, str(run), server.media, MEDIA_URL, "t-run", batch_size=1, overlap=2)
    (second,) = push(again, ["cinematic"])
    assert (second.project, second.imported, second.already) == (pid, 0, 3)
    assert second.title.endswith(config_hash(label_config("cinematic")))

    # two annotators, created on the server, each answering with their own token
    tokens = {}
    for name in ("ann1", "ann2"):
        admin.users.create(email=f"{name}@example.com", username=name, first_name=name, last_name="Tester")
        tokens[name] = server.user_token(f"{name}@example.com")
    assert tokens["ann1"] != tokens["ann2"] != server.token
    order = [r["clip_id"] for r in rows]
    ann1 = [("pan_left", "wide"), ("static", "medium"), ("tilt_up", "close_up")]
    ann2 = [("pan_left", "wide"), ("pan_left", "medium"), ("tilt_up", "wide")]
    for name, answers in (("ann1", ann1), ("ann2", ann2)):
        me = _client(server, tokens[name])
        assert me.users.whoami().email == f"{name}@example.com"
        for cid, (motion, size) in zip(order, answers, strict=True):
            _answer(me, by_clip[cid].id, {"camera_motion": motion, "shot_size": size}, lead=4.0)
    # a task for a clip that is not in the run, annotated: reported, never joined
    (stray,) = admin.projects.import_tasks(id=pid, request=[{"data": {"video": "x", "clip_id": "nope"}}],
                                           return_task_ids=True).task_ids  # fmt: skip
    _answer(_client(server, tokens["ann1"]), stray, {"camera_motion": "static", "shot_size": "wide"}, 1.0)

    parent = tmp_path / "parent"
    shutil.copytree(run, parent)
    gold = {order[1]: {"camera_motion": "static"}}  # ann1 right, ann2 wrong on the gold task
    summary = pull_overlay(admin, str(parent), {"cinematic": pid}, gold=gold, bound=0.75)
    fam = summary["families"]["cinematic"]
    assert summary["unknown_clips"] == ["nope"] and summary["clips_labelled"] == 3
    assert (fam["annotations"], fam["clips"], fam["empty"], fam["problems"]) == (6, 3, 0, 0)
    # kappa by hand. camera_motion: agree on 2 of 3; ann1 pan/static/tilt, ann2 pan/pan/tilt:
    # p_e = (1/3 * 2/3) + (1/3 * 0) + (1/3 * 1/3) = 1/3, kappa = (2/3 - 1/3) / (1 - 1/3) = 0.5
    assert fam["kappa"]["camera_motion"] == pytest.approx(0.5)
    # shot_size: agree on 2 of 3; ann1 wide/medium/close_up, ann2 wide/medium/wide:
    # p_e = (1/3 * 2/3) + (1/3 * 1/3) + (1/3 * 0) = 1/3 -> 0.5
    assert fam["kappa"]["shot_size"] == pytest.approx(0.5)
    assert fam["gold_accuracy"] == {"ann1@example.com": 1.0, "ann2@example.com": 0.0}
    assert fam["tasks_per_annotator"] == {"ann1@example.com": 3, "ann2@example.com": 3}
    assert fam["requeue"] == [c for c in sorted(order) if c in (order[1], order[2])]  # agreement 0.5 < 0.75

    # the two clips below the bound go back to the queue with a third annotator: Label Studio hands
    # one of them, not the agreed clip, to a new annotator who asks for their next task
    again = Pusher(admin, str(run), server.media, MEDIA_URL, "t-run", overlap=2)
    assert again.requeue("cinematic", fam["requeue"], overlap=3) == 2
    assert again.requeue("cinematic", fam["requeue"], overlap=3) == 0  # a rerun changes nothing
    for cid in order:
        task = admin.tasks.get(id=str(by_clip[cid].id))
        assert (task.overlap, task.is_labeled) == ((3, False) if cid in fam["requeue"] else (2, True)), cid
    admin.users.create(email="ann5@example.com", username="ann5", first_name="ann5", last_name="Tester")
    ann5 = server.user_token("ann5@example.com")
    tokens["ann5"] = ann5
    nxt = httpx.get(f"{server.url}/api/projects/{pid}/next", headers={"Authorization": f"Token {ann5}"}, timeout=30)
    assert nxt.status_code == 200 and nxt.json()["data"]["clip_id"] in fam["requeue"], nxt.text[:300]

    overlay = {r["id"]: r for p in sorted((parent / "overlays" / "human" / "clip").glob("*.parquet"))
               for r in pq.read_table(p).to_pylist()}  # fmt: skip
    assert set(overlay) == set(order)
    # a tie on the gold task's clip goes to the annotator right on gold
    assert [overlay[c]["camera_motion"] for c in order] == ["pan_left", "static", "tilt_up"]
    assert [overlay[c]["cinematic_annotators"] for c in order] == [2, 2, 2]
    # calibration: the run's flow_speed minimum against "the camera moves" in the consensus
    # (the run had no flow_speed filter: no decision to score, only the threshold people agree with)
    flow = summary["calibration"]["flow_speed"]
    moving = [overlay[c]["camera_motion"] != "static" for c in order]
    auto = [r["scores"]["flow_speed"] >= flow["suggested_threshold"] for r in rows]
    assert (flow["clips"], flow["threshold"], flow["agreement"]) == (3, None, None)
    assert flow["suggested_agreement"] == sum(a == m for a, m in zip(auto, moving, strict=True)) / 3
    guessed = [r["pre_annotations"]["camera_motion"] == overlay[r["clip_id"]]["camera_motion"] for r in rows]
    assert summary["calibration"]["camera_motion_label"]["accuracy"] == pytest.approx(sum(guessed) / 3)

    cfg = tmp_path / "where.yaml"
    rule = {"column": "overlays.human.camera_motion", "none_of": ["static"], "reason": "human_static"}
    cfg.write_text(yaml.safe_dump({"where": [rule]}))
    sel = tmp_path / "sel"
    assert main(["select", "--run", str(parent), "--output", str(sel), "--config", str(cfg), "--no-progress"]) == 0
    m = json.loads((sel / "manifest.json").read_text())
    assert m["accounting_ok"] and m["kinds"]["clip"]["reasons"]["dropped"] == {"human_static": 1}

    # the admin's and the annotators' tokens are in no file mmcurate wrote
    for folder in (parent, sel, server.media):
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for token in (server.token, *tokens.values()):
                    assert token.encode() not in data, path


class _LoseOneAnswer(http.server.BaseHTTPRequestHandler):
    """A loopback proxy to Label Studio that forwards every request, but for the first task import
    closes the connection once the server has taken the batch, before its answer: a lost response."""

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        skip = ("host", "content-length", "connection", "accept-encoding")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        got = httpx.request(self.command, self.server.upstream + self.path, headers=headers, content=body, timeout=120)
        if self.command == "POST" and "/import" in self.path and self.server.drops > 0:
            self.server.drops -= 1
            self.close_connection = True
            return  # the batch is in; the client never hears so
        self.send_response(got.status_code)
        for k, v in got.headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(got.content)))
        self.end_headers()
        self.wfile.write(got.content)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

    def log_message(self, *args: object) -> None:
        pass


def test_a_batch_whose_answer_is_lost_goes_in_once(server, run: Path) -> None:
    from label_studio_sdk import LabelStudio

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LoseOneAnswer)
    proxy.upstream, proxy.drops = server.url, 1  # type: ignore[attr-defined]
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        client = LabelStudio(base_url=f"http://127.0.0.1:{proxy.server_port}", api_key=server.token)
        (summary,) = push(Pusher(client, str(run), server.media, MEDIA_URL, "lost-run", batch_size=2), ["cinematic"])
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert proxy.drops == 0  # type: ignore[attr-defined]  # the answer was cut
    keys = [t.data["task_key"] for t in _client(server).tasks.list(project=summary.project, fields="task_only")]
    assert sorted(keys) == sorted(r["clip_id"] for r in queue_rows(str(run)))  # each once: the retry listed first
    assert (summary.imported, summary.batches, summary.twins_removed) == (3, 2, 0)


def _segment(start: int, end: int, label: str, rid: str) -> list[dict]:
    """A Label Studio timeline region (1-based inclusive frames) with its per-region description."""
    return [
        {"id": rid, "from_name": "action", "to_name": "video", "type": "timelinelabels",
         "value": {"ranges": [{"start": start, "end": end}], "timelinelabels": [label]}},
        {"id": rid, "from_name": "action_text", "to_name": "video", "type": "textarea",
         "value": {"text": [f"someone does {label}"]}},
    ]  # fmt: skip


def test_cli_push_and_pull_actions_with_an_empty_annotation(
    server, run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("LABEL_STUDIO_URL", server.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.token)
    parent = tmp_path / "cli-run"
    shutil.copytree(run, parent)
    order = [r["clip_id"] for r in queue_rows(str(parent))]
    gold_file = tmp_path / "gold.json"
    gold_file.write_text(json.dumps({order[2]: {"usable": "unusable", "camera_motion": "static"}}))
    push_args = ["annotate", "push", "--run", str(parent), "--family", "actions", "--media", str(server.media),
                 "--gold", str(gold_file), "--gold-rate", "0.25"]  # fmt: skip
    assert main([*push_args, "--batch-size", "2", "--overlap", "2"]) == 0
    (pushed,) = json.loads(capsys.readouterr().out)
    # a quarter of the tasks gold: after the three clips, a copy of the gold clip
    assert (pushed["family"], pushed["imported"], pushed["batches"], pushed["gold_tasks"]) == ("actions", 4, 2, 1)
    admin = _client(server)
    listed = list(admin.tasks.list(project=pushed["project"], fields="all"))
    assert [t.data["task_key"] for t in sorted(listed, key=lambda t: t.id)] == [*order, f"gold-0:{order[2]}"]
    tasks = {t.data["clip_id"]: t for t in listed if not t.data["gold"]}
    (gold_task,) = [t for t in listed if t.data["gold"]]
    # the scene timeline is the actions pre-annotation: one scene over each one-scene clip
    (pred,) = admin.predictions.list(task=tasks[order[0]].id)
    assert [(r["from_name"], r["value"]["ranges"]) for r in pred.result] == [
        ("scene", [{"start": 1, "end": tasks[order[0]].data["frames"]}])
    ]
    users = {}
    for name in ("ann3", "ann4"):
        admin.users.create(email=f"{name}@example.com", username=name, first_name=name, last_name="Tester")
        users[name] = _client(server, server.user_token(f"{name}@example.com"))
    usable = {"from_name": "usable", "to_name": "video", "type": "choices", "value": {"choices": ["usable"]}}
    unusable = {**usable, "value": {"choices": ["unusable"]}}
    # clip 0: ann3 walk 1-40 (ours 0..40), ann4 walk 21-60 (ours 20..60): IoU 20 / 60
    users["ann3"].annotations.create(id=tasks[order[0]].id, result=[*_segment(1, 40, "walk", "s1"), usable])
    users["ann4"].annotations.create(id=tasks[order[0]].id, result=[*_segment(21, 60, "walk", "s2"), usable])
    users["ann3"].annotations.create(id=tasks[order[1]].id, result=[*_segment(1, 75, "talk", "s3"), unusable])
    users["ann4"].annotations.create(id=tasks[order[1]].id, result=[])  # submitted, nothing labelled
    users["ann3"].annotations.create(id=gold_task.id, result=[usable])  # wrong on gold
    users["ann4"].annotations.create(id=gold_task.id, result=[unusable])  # right on gold
    summary_file = tmp_path / "pull.json"
    sft = tmp_path / "sft"
    questions = tmp_path / "questions"
    pull_args = ["annotate", "pull", "--run", str(parent), "--family", "actions", "--summary", str(summary_file),
                 "--sft", str(sft), "--gold", str(gold_file), "--questions", str(questions)]  # fmt: skip
    assert main(pull_args) == 0
    captured = capsys.readouterr()
    summary = json.loads(summary_file.read_text())
    fam = summary["families"]["actions"]
    assert (fam["annotations"], fam["empty"], fam["clips"], fam["gold_answers"]) == (6, 1, 2, 2)
    # gold accuracy from the copies, on the actions control only (camera_motion is no actions question)
    assert fam["gold_accuracy"] == {"ann3@example.com": 0.0, "ann4@example.com": 1.0}
    assert fam["temporal_iou"] == pytest.approx(20 / 60)  # over the one clip with two answers
    assert (fam["kappa"], fam["kappa_items"]) == ({"usable": 1.0}, {"usable": 1})
    overlay = {r["id"]: r for p in sorted((parent / "overlays" / "human" / "clip").glob("*.parquet"))
               for r in pq.read_table(p).to_pylist()}  # fmt: skip
    assert overlay[order[1]]["usable"] == "unusable" and order[2] not in overlay
    # consensus segments by frame majority: on clip 0 only frames 20..40 have both votes
    assert [(s["label"], s["start_frame"], s["end_frame"]) for s in json.loads(overlay[order[0]]["actions"])] == [
        ("walk", 20, 40)
    ]
    # SFT rows from the labels: clip 0 (usable) gets its caption and the action-time question; clip 1,
    # marked unusable, none; the clip file sits beside the rows, named relative to dataset_info.json
    assert summary["sft_rows"] == 2
    rows = json.loads((sft / "mmcurate_human.json").read_text())
    span = f"From {20 / 30:.1f} s to {40 / 30:.1f} s"
    assert [r["messages"][1]["content"] for r in rows] == [f"{span}: walk (someone does walk).", f"{span}."]
    assert rows[1]["messages"][0]["content"] == "<video>When does the action 'walk' happen in this video?"
    assert all(r["videos"] == [f"videos/{order[0]}.mp4"] and r["images"] == [] for r in rows)
    assert (sft / rows[0]["videos"][0]).read_bytes()[4:8] == b"ftyp"
    info = json.loads((sft / "dataset_info.json").read_text())["mmcurate_human"]
    assert (info["file_name"], info["formatting"], info["columns"]["videos"]) == (
        "mmcurate_human.json",
        "sharegpt",
        "videos",
    )
    # the pull's summary is kept in the run: the run's report shows agreement per family and annotator
    from mmcurate.report import build_report

    kept = json.loads(Path(summary["pull_summary"]).read_text())
    assert kept["families"]["actions"]["gold_accuracy"] == fam["gold_accuracy"] and "labels" not in kept
    html = Path(build_report(str(parent))).read_text()
    assert '<section id="annotation">' in html and "ann4@example.com" in html and "0.333" in html  # temporal IoU
    # video questions for the pass-rate corpus: read back by its own reader, graded by its verifier
    from mmcurate.stages.io import jsonl_units
    from mmcurate.stages.question_io import QuestionReadParams, read_questions
    from mmcurate.stages.verify.choice import verify_choice

    qfile = str(questions / "questions.jsonl")
    (q,) = [q for u in jsonl_units(qfile, 1000, 0, qfile) for q in read_questions(u, QuestionReadParams())]
    assert q.pending and (q.domain, q.answer_type.value, q.question) == ("video", "choice", TEMPLATES["q_action"])
    assert q.video == str(questions / "videos" / f"{order[0]}.mp4") and Path(q.video).read_bytes()[4:8] == b"ftyp"
    walk = q.choices.index("walk")
    assert q.answer == "ABCDEFGHIJKLMNOP"[walk] and summary["questions"] == 1
    assert verify_choice("walk", q.answer, choices=q.choices) and not verify_choice("run", q.answer, choices=q.choices)
    assert server.token not in captured.out + captured.err
    for path in parent.rglob("*"):
        assert not path.is_file() or server.token.encode() not in path.read_bytes(), path


def test_push_to_object_storage_with_presigned_urls(
    server, run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployment that reads clips from S3 (a real moto server on loopback): push uploads each clip
    under the prefix; with --presign the task's video is a signed URL that fetches the shard's member,
    else the object's URI for the project's cloud storage; a rerun uploads and imports nothing."""
    from moto_s3 import moto_s3

    admin = _client(server)
    rows = {r["clip_id"]: r for r in queue_rows(str(run))}
    with moto_s3(monkeypatch, tmp_path, "ls-clips") as fs:
        signed = Pusher(admin, str(run), "s3://ls-clips/clips", MEDIA_URL, "s3-run", presign=3600)
        (first,) = push(signed, ["cinematic"])
        assert (first.imported, first.media_written) == (3, 3)
        assert sorted(fs.ls("ls-clips/clips")) == sorted(f"ls-clips/clips/{c}.mp4" for c in rows)
        for task in admin.tasks.list(project=first.project, fields="all"):
            url, row = task.data["video"], rows[task.data["clip_id"]]
            assert url.startswith("http://127.0.0.1:") and "Signature=" in url, url
            with urllib.request.urlopen(url, timeout=30) as got, tarfile.open(run / row["shard"]) as tar:
                assert got.read() == tar.extractfile(f"{row['key']}.mp4").read()
        (again,) = push(Pusher(admin, str(run), "s3://ls-clips/clips", MEDIA_URL, "s3-run", presign=3600),
                        ["cinematic"])  # fmt: skip
        assert (again.project, again.imported, again.already, again.media_written) == (first.project, 0, 3, 0)
        assert again.renewed == 3  # a push again signs the tasks already there anew (their URLs expire)
        for task in admin.tasks.list(project=first.project, fields="all"):
            with urllib.request.urlopen(task.data["video"], timeout=30) as got:
                assert got.status == 200 and got.read()[4:8] == b"ftyp"
        (plain,) = push(Pusher(admin, str(run), "s3://ls-clips/clips", MEDIA_URL, "s3-run"), ["text"])
        videos = sorted(t.data["video"] for t in admin.tasks.list(project=plain.project, fields="all"))
        assert videos == sorted(f"s3://ls-clips/clips/{c}.mp4" for c in rows) and plain.media_written == 0
    assert not list(admin.import_storage.local.list(project=first.project))  # no local storage for S3 media


def test_combined_project_is_one_task_per_clip_and_agreement_per_family(server, run: Path, tmp_path: Path) -> None:
    """`--family combined`: one project with every family's controls and guesses; two annotators
    answer camera motion, usability and an action in one go; pull measures each family apart."""
    from mmcurate.annotate import pull_overlay, run_name
    from mmcurate.annotation.label_configs import COMBINED

    parent = tmp_path / "comb-run"
    shutil.copytree(run, parent)
    admin = _client(server)
    (pushed,) = push(Pusher(admin, str(parent), server.media, MEDIA_URL, run_name(str(parent))), [COMBINED])
    assert pushed.imported == 3 and f" {COMBINED} " in pushed.title
    tasks = {t.data["clip_id"]: t for t in admin.tasks.list(project=pushed.project, fields="all")}
    order = [r["clip_id"] for r in queue_rows(str(parent))]
    (pred,) = admin.predictions.list(task=tasks[order[0]].id)
    assert {r["from_name"] for r in pred.result} >= {"scene", "camera_motion"}  # both families' guesses in one
    me = {}
    for name in ("ann6", "ann7"):
        admin.users.create(email=f"{name}@example.com", username=name, first_name=name, last_name="Tester")
        me[name] = _client(server, server.user_token(f"{name}@example.com"))
    for name, motion in (("ann6", "pan_left"), ("ann7", "pan_left")):
        for cid in order[:2]:
            result = [{"from_name": "camera_motion", "to_name": "video", "type": "choices",
                       "value": {"choices": [motion if cid == order[0] else "static"]}},
                      {"from_name": "usable", "to_name": "video", "type": "choices", "value": {"choices": ["usable"]}},
                      *_segment(1, 30 if name == "ann6" else 60, "walk", f"{name}{cid[:4]}")]  # fmt: skip
            me[name].annotations.create(id=tasks[cid].id, result=result)
    summary = pull_overlay(admin, str(parent), {COMBINED: pushed.project})
    fams = summary["families"]
    assert set(fams) == {"actions", "text", "cinematic"} and {f["project"] for f in fams.values()} == {pushed.project}
    assert fams["cinematic"]["kappa"] == {"camera_motion": 1.0} and fams["cinematic"]["annotations"] == 4
    assert fams["actions"]["kappa"] == {"usable": 1.0} and fams["actions"]["temporal_iou"] == pytest.approx(0.5)
    assert fams["text"]["clips"] == 0  # nobody boxed any text
    labels = summary["labels"]
    assert [labels[c]["camera_motion"] for c in order[:2]] == ["pan_left", "static"]
    assert all(labels[c]["usable"] == "usable" and json.loads(labels[c]["actions"]) for c in order[:2])


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PLAY = """async () => {
  // Label Studio re-renders the editor after load, so the <video> found first may be replaced:
  // query it afresh until one is attached and has data (bounded), then play that one
  const wait = ms => new Promise(r => setTimeout(r, ms));
  let v = null;
  for (let i = 0; i < 200; i++) {
    v = document.querySelector('video');
    if (v && v.readyState >= 2) break;
    await wait(100);
  }
  if (!v) return {played: 'no video element', ready: 0, time: 0, duration: 0, width: 0};
  v.muted = true;
  // play() stays pending while the media stalls: bounded, so a clip that never loads fails the test
  const played = await Promise.race([v.play().then(() => 'ok', e => String(e)), wait(20000).then(() => 'timeout')]);
  await wait(700);
  return {played, ready: v.readyState, time: v.currentTime, duration: v.duration, width: v.videoWidth};
}"""


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (`make chromium`)")
def test_each_labeling_config_renders_and_plays_its_clip_in_chromium(server, run: Path, tmp_path: Path) -> None:
    """Headless Chromium (Debian's, driven by Playwright, no browser download) logs in, opens a task of
    each family's project: the clip plays from the served folder and every option of the config renders."""
    from playwright.sync_api import sync_playwright

    from mmcurate.annotation.label_configs import OPTION_TAGS

    pusher = Pusher(_client(server), str(run), server.media, MEDIA_URL, "ui-run")
    summaries = push(pusher, ["cinematic", "actions", "text", "combined"])
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        page.goto(f"{server.url}/user/login/")
        page.fill("input[name=email]", server.email)
        page.fill("input[name=password]", server.password)
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        for s in summaries:
            task = next(iter(_client(server).tasks.list(project=s.project)))
            page.goto(f"{server.url}/projects/{s.project}/data?task={task.id}")
            page.wait_for_selector("video", state="attached", timeout=60000)
            video = page.evaluate(PLAY)
            shot = tmp_path / f"{s.family}.png"
            page.screenshot(path=str(shot))
            assert video["ready"] >= 2 and video["time"] > 0 and video["width"] == 320, (s.family, video)
            assert video["duration"] == pytest.approx(task.data["frames"] / task.data["fps"], abs=0.05)
            body = page.inner_text("body")
            assert f"of {task.data['frames']}" in body, s.family  # the frame counter reads the task's fps
            root = ET.fromstring(label_config(s.family))
            shown = [c for c in root.iter() if c.tag in OPTION_TAGS and c.get("perRegion") != "true"]
            for control in shown:
                for option in control:
                    assert option.get("value") in body, (s.family, control.get("name"), option.get("value"))
            assert shot.stat().st_size > 10_000
        browser.close()
