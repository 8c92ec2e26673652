"""SFT/RL selection from pass rates, end to end, with real generation by a tiny model built here.

The tiny Llama (tests/tiny_models.py) is fitted for a few steps so that the test controls what it
answers: always the reference (too easy), a 50/50 mix of the reference and a wrong answer
(learnable), or never (hopeless). Expectations are recomputed from the stored responses with the
verifier, never hard-coded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from mmcurate.cli import main
from mmcurate.schemas import AnswerType, Question, Source
from mmcurate.stages import rollout as ro
from mmcurate.stages.verify import verify

tiny_models = pytest.importorskip("tiny_models")

BOX = "<|begin_of_box|>{}<|end_of_box|>"
PLACEHOLDER = "<|image|>"
SAMPLING = {"k": 8, "temperature": 1.0, "top_p": 1.0, "max_tokens": 8, "thinking": True, "seed": 0}

# question, reference, answer type, domain, what the model is fitted to answer (seen), and blind
ROWS = [
    ("how many cat shown ?", "2", "number", "counting", ["2"], ["2"]),
    ("which animal shown ?", "cat", "text", "general", ["cat", "dog"], ["bird"]),
    ("which color box left ?", "purple", "text", "chart", ["red"], ["red"]),
    ("the answer is green . which color shown ?", "green", "text", "general", ["green", "blue"], ["blue"]),
    ("which color shown top ?", "yellow", "text", "chart", ["yellow", "white"], ["black"]),
]


def _question(text: str, answer: str, kind: str, domain: str, image: str) -> Question:
    return Question(
        id="x",
        source=Source(uri="u", unit=0),
        question=text,
        answer=answer,
        answer_type=AnswerType(kind),
        images=[image],
        domain=domain,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("passrate")
    image = root / "img.png"
    Image.new("RGB", (32, 24), (200, 30, 30)).save(image)
    prompt = ro.PromptParams(image_placeholder=PLACEHOLDER)
    sampling = ro.SamplingParams(**SAMPLING)
    train = []
    for text, answer, kind, domain, seen, blind in ROWS:
        q = _question(text, answer, kind, domain, str(image))
        for reply in seen:
            train.append((ro.build_messages(q, prompt, sampling), BOX.format(reply)))
        for reply in blind:
            train.append((ro.build_messages(q, prompt, sampling, blind=True), BOX.format(reply)))
    model = tiny_models.build_tiny_llama(root / "model", train=train, steps=300)
    lines = [
        json.dumps({"question": t, "answer": a, "answer_type": k, "domain": d, "images": ["img.png"]})
        for t, a, k, d, _, _ in ROWS
    ]
    lines += [
        json.dumps({"question": "which color shown ?"}),  # no reference answer
        json.dumps({"question": "how many dog shown ?", "answer": "3", "images": ["missing.png"]}),
        "{not json",
        json.dumps(
            {
                "question": ROWS[0][0],
                "answer": "2",
                "answer_type": "number",
                "domain": "counting",
                "images": ["img.png"],
            }
        ),
    ]
    data = root / "questions.jsonl"
    data.write_text("\n".join(lines) + "\n")
    return {"root": root, "model": model, "data": data}


def config(corpus: dict[str, Path], **over: object) -> Path:
    cfg = {
        "rollout": {
            "backend": "transformers",
            "transformers": {"model": str(corpus["model"]), "device": "cpu", "batch_size": 4},
            "sampling": SAMPLING,
            "prompt": {"image_placeholder": PLACEHOLDER},
            "cache": str(corpus["root"] / "cache"),
        },
        **over,
    }
    path = corpus["root"] / f"cfg-{abs(hash(json.dumps(cfg, sort_keys=True, default=str)))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(mode: str, corpus: dict[str, Path], out: Path, cfg: Path) -> dict:
    assert (
        main([mode, "--input", str(corpus["data"]), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    )
    return json.loads((out / "manifest.json").read_text())


def ledger(out: Path) -> dict[str, dict]:
    rows = [r for f in sorted((out / "ledger" / "question").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return {r["source"]["member"]: r for r in rows}


def cached_rollouts(corpus: dict[str, Path]) -> list[dict]:
    return [r for f in sorted((corpus["root"] / "cache").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_rl_grades_selects_and_writes_verl(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "rl"
    m = run("rl", corpus, out, config(corpus))
    rows = ledger(out)
    assert m["accounting_ok"] and m["kinds"]["question"]["counts"]["input"] == len(rows) == 9
    assert rows["line6"]["fate"]["reason"] == "bad_question"
    assert rows["line7"]["fate"]["reason"] == "missing_image"
    assert rows["line8"]["fate"]["reason"] == "bad_json"
    assert rows["line9"]["fate"]["reason"] == "duplicate_exact"  # the same question, answer and image as line1
    assert rows["line9"]["fate"]["duplicate_of"] == rows["line1"]["id"] == rows["line9"]["id"]

    # the run's report: the pass-rate histogram and the tier x domain table, counted from the ledger
    from collections import Counter

    from mmcurate.report import build_report

    html = Path(build_report(str(out))).read_text()
    rated = [r for r in rows.values() if r["scores"].get("pass_rate") is not None]
    assert '<section id="passrate">' in html and f"{len(rated)} questions with a pass rate." in html
    cells = Counter((r["domain"], r["labels"].get("tier") or "") for r in rated)
    tiers = sorted({t for _, t in cells})
    for domain in sorted({d for d, _ in cells}):
        row = "".join(f'<td class="n">{cells[(domain, t)]}</td>' for t in tiers)
        assert f"<tr><td>{domain}</td>{row}</tr>" in html, domain

    # Pass rates equal what the verifier says of the stored responses; blind ones likewise.
    rollouts = cached_rollouts(corpus)
    for member, (_, answer, kind, *_rest) in zip(("line1", "line2", "line3", "line4", "line5"), ROWS, strict=True):
        r = rows[member]
        mine = [x for x in rollouts if x["question_id"] == r["id"]]
        seen = [x for x in mine if not x["blind"]]
        assert len(seen) == 1 and len(seen[0]["responses"]) == SAMPLING["k"]
        want = sum(verify(t, answer, kind).correct for t in seen[0]["responses"]) / SAMPLING["k"]
        scores = dict(r["scores"])
        assert scores["pass_rate"] == pytest.approx(want)
        blind = [x for x in mine if x["blind"]]
        assert len(blind) == 1
        assert scores["blind_pass_rate"] == pytest.approx(sum(blind[0]["correct"]) / SAMPLING["k"])

    fates = {m_: (r["fate"]["status"], r["fate"]["reason"]) for m_, r in rows.items()}
    rates = {m_: dict(r["scores"]).get("pass_rate") for m_, r in rows.items()}
    assert rates["line1"] == 1.0 and fates["line1"] == ("dropped", "too_easy")  # fitted to always answer 2
    assert rates["line3"] == 0.0 and fates["line3"] == ("dropped", "hopeless")  # never says purple
    assert 0 < rates["line2"] < 1 and fates["line2"] == ("kept", "")
    assert dict(rows["line4"]["labels"]).get("answer_leak") == "question"
    assert fates["line4"] == ("dropped", "answer_leak") or rates["line4"] in (0.0, 1.0)
    kept = [m_ for m_, f in fates.items() if f[0] == "kept"]
    tiers = m["config"]["select"]["rl"]["tiers"]
    for m_ in kept:
        tier = dict(rows[m_]["labels"])["tier"]
        lo, hi = tiers[tier]
        assert lo <= rates[m_] < hi

    # verl's layout, read back with pyarrow
    files = sorted((out / "rl").rglob("*.parquet"))
    table = [r for f in files for r in pq.read_table(f).to_pylist()]
    assert len(table) == len(kept)
    for f in files:  # rl/{split}/part-UUUUU.parquet, each row's split its folder's
        assert {r["extra_info"]["split"] for r in pq.read_table(f).to_pylist()} == {f.parent.name}
    row = table[0]
    assert set(row) == {"data_source", "prompt", "images", "videos", "ability", "reward_model", "extra_info"}
    assert row["videos"] == []
    assert row["prompt"][0]["role"] == "user" and row["prompt"][0]["content"].startswith("<image>")
    assert row["reward_model"]["style"] == "rule"
    assert row["images"][0]["bytes"] == (corpus["root"] / "img.png").read_bytes()
    extra = row["extra_info"]  # a struct: verl calls extra_info.get(...)
    assert extra["tier"] and 0 < extra["pass_rate"] < 1 and extra["domain"] == row["ability"]
    assert row["data_source"] == f"mmcurate/{row['ability']}" and extra["index"] >= 0
    assert json.loads(extra["verify"])["convention"] == "glm_box"
    # curriculum table and histogram agree with the ledger
    counted = sum(n for t in m["extras"]["curriculum"]["counts"].values() for n in t.values())
    assert counted == len(kept)
    assert sum(m["extras"]["pass_rate_histogram"]["counts"]) == sum(1 for v in rates.values() if v is not None)


def test_cache_means_no_regeneration_and_sft_output(corpus: dict[str, Path], tmp_path: Path) -> None:
    cfg = config(corpus)
    run("rl", corpus, tmp_path / "first", cfg)
    before = cached_rollouts(corpus)
    m = run("sft", corpus, tmp_path / "sft", cfg)  # same model, prompts and sampling: all cached
    metrics = json.loads((tmp_path / "sft" / "metrics.json").read_text())["counters"]
    assert metrics.get("mmcurate/rollout.to_generate", 0) == 0
    assert metrics["mmcurate/rollout.cached"] == len(before)
    assert cached_rollouts(corpus) == before
    rows = ledger(tmp_path / "sft")
    rates = {k: dict(r["scores"]).get("pass_rate") for k, r in rows.items()}
    for k, r in rows.items():
        if r["fate"]["status"] == "kept":
            assert 0 < rates[k] < 1
    data = pq.read_table(tmp_path / "sft" / "sft" / "part-00000.parquet").to_pylist()
    assert len(data) == m["kinds"]["question"]["counts"]["kept"] > 0
    for item in data:
        user, assistant = item["messages"]
        assert user["role"] == "user" and user["content"].startswith("<image>") and assistant["role"] == "assistant"
        q = next(r for r in rows.values() if r["fate"]["status"] == "kept" and user["content"].count(r["question"]))
        assert verify(assistant["content"], q["answer"], q["answer_type"]).correct  # a verified rollout
        # the images copied beside the file, named relative to the folder (LLaMA-Factory's dataset_dir)
        copied = [(tmp_path / "sft" / p).read_bytes() for p in item["images"]]
        assert copied == [Path(p).read_bytes() for p in q["images"]]
        assert all(not Path(p).is_absolute() and p.startswith("images/") for p in item["images"])
    info = json.loads((tmp_path / "sft" / "dataset_info.json").read_text())
    assert info["mmcurate"]["formatting"] == "sharegpt" and info["mmcurate"]["columns"]["images"] == "images"

    # A new sampling setting is a new cache key: generated once, then cached in its turn.
    cfg2 = config(corpus, **{})
    text = yaml.safe_load(cfg2.read_text())
    text["rollout"]["sampling"]["seed"] = 1
    cfg2.write_text(yaml.safe_dump(text))
    run("rl", corpus, tmp_path / "seed1", cfg2)
    metrics = json.loads((tmp_path / "seed1" / "metrics.json").read_text())["counters"]
    assert metrics["mmcurate/rollout.to_generate"] == len(before)


def test_openai_backend_gives_the_same_pass_rates(corpus: dict[str, Path], tmp_path: Path) -> None:
    from oai_server import OpenAIServer

    with OpenAIServer(corpus["model"], name="tiny") as srv:
        cfg = {
            "rollout": {
                "backend": "openai",
                "openai": {"base_url": srv.base_url, "model": "tiny", "api_key_env": "NO_SUCH_KEY_VAR"},
                "sampling": SAMPLING,
                "prompt": {"image_placeholder": PLACEHOLDER},
                "cache": str(tmp_path / "cache"),
            }
        }
        path = tmp_path / "oai.yaml"
        path.write_text(yaml.safe_dump(cfg))
        run("rl", corpus, tmp_path / "oai", path)
        assert srv.requests  # real requests reached the server
    local = run("rl", corpus, tmp_path / "local", config(corpus))
    a, b = ledger(tmp_path / "oai"), ledger(tmp_path / "local")
    assert {k: dict(r["scores"]).get("pass_rate") for k, r in a.items()} == {
        k: dict(r["scores"]).get("pass_rate") for k, r in b.items()
    }
    assert local["accounting_ok"]


def test_missing_model_fails_before_running(
    corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"rollout": {"transformers": {"model": str(tmp_path / "nope")}}}))
    assert main(["rl", "--input", str(corpus["data"]), "--output", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    assert "rollout.transformers.model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_answer_written_in_the_image_is_a_leak(corpus: dict[str, Path], tmp_path: Path) -> None:
    """leak.ocr: the reference answer printed in the question's image is found by PP-OCR (rapidocr)."""
    from PIL import ImageDraw, ImageFont

    poster = tmp_path / "poster.png"
    img = Image.new("RGB", (480, 160), (255, 255, 255))
    ImageDraw.Draw(img).text((20, 40), "ZEBRA", fill=(0, 0, 0), font=ImageFont.load_default(size=72))
    img.save(poster)
    data = tmp_path / "q.jsonl"
    rows = [
        {"question": "which animal shown ?", "answer": "zebra", "images": ["poster.png"]},
        {"question": "which color shown ?", "answer": "purple", "images": ["poster.png"]},
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = yaml.safe_load(config(corpus).read_text())
    cfg["leak"] = {"ocr": True}
    cfg["rollout"]["cache"] = str(tmp_path / "cache")
    path = tmp_path / "leak.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert main(["rl", "--input", str(data), "--output", str(out), "--config", str(path), "--no-progress"]) == 0
    labels = {r["answer"]: dict(r["labels"]) for r in ledger(out).values()}
    assert labels["zebra"].get("answer_leak") == "image_text"
    assert labels["purple"]["answer_leak"] is None  # a declared label, not set for this question


def test_hugging_face_datasets_loads_every_table(corpus: dict[str, Path], tmp_path: Path) -> None:
    from hf_loaders import assert_loads_everything

    out = tmp_path / "rl"
    m = run("rl", corpus, out, config(corpus))
    seen = assert_loads_everything(out, tmp_path / "hf")
    assert seen["ledger/question"] == m["kinds"]["question"]["counts"]["input"] == 9
    rl = {k: n for k, n in seen.items() if k.startswith("rl/")}
    assert set(rl) <= {"rl/train", "rl/val"} and sum(rl.values()) == m["kinds"]["question"]["counts"]["kept"]
    assert "quarantined/question" in seen
    from hf_loaders import datasets

    cache = corpus["root"] / "cache"
    ds = datasets.load_dataset("parquet", data_dir=str(cache), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert ds.num_rows == len(cached_rollouts(corpus)) and len(ds[0]["responses"]) == SAMPLING["k"]


def test_recipe_under_test_pipeline(corpus: dict[str, Path], tmp_path: Path) -> None:
    """The RL recipe in a TestPipeline (rollouts from the cache the other tests filled, or generated)."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from mmcurate.pipelines.passrate import RL
    from mmcurate.pipelines.run import new_run

    cfg = RL.load_config(str(config(corpus)))
    units = RL.list_units([str(corpus["data"])], cfg)
    out = tmp_path / "rl"
    with TestPipeline() as p:
        manifest = RL.build(p, units, cfg, new_run(RL, cfg, [str(corpus["data"])], units, str(out)))
        got = manifest | beam.Map(lambda m: (m["kinds"]["question"]["counts"]["input"], m["accounting_ok"]))
        assert_that(got, equal_to([(9, True)]))
    rows = ledger(out)
    assert len(rows) == 9 and rows["line8"]["fate"]["reason"] == "bad_json"
    kept = [r for r in rows.values() if r["fate"]["status"] == "kept"]
    assert sum(len(pq.read_table(f)) for f in (out / "rl").rglob("*.parquet")) == len(kept)


def test_select_rethresholds_a_passrate_run_from_its_ledger(corpus: dict[str, Path], tmp_path: Path) -> None:
    """New RL tiers and leak policy, decided from the ledger's grades: not one rollout is generated."""
    from mmcurate.schemas import Question
    from mmcurate.stages.passrate_select import RlParams, decide_rl

    parent = tmp_path / "rl"
    run("rl", corpus, parent, config(corpus))
    new = {"tiers": {"hard": [0.0, 0.5], "easy": [0.5, 1.0]}, "drop_answer_leak": False}
    cfg = config(corpus, select={"rl": new})
    out = tmp_path / "sel"
    assert main(["select", "--run", str(parent), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    counters = json.loads((out / "metrics.json").read_text())["counters"]
    assert m["accounting_ok"] and "mmcurate/rollout.to_generate" not in counters
    before, after = ledger(parent), ledger(out)
    assert set(before) == set(after)
    for member, row in after.items():
        old = before[member]
        assert row["scores"] == old["scores"]
        if old["scores"]["k"] is None:  # never graded (quarantined, duplicate): as it was
            assert row["fate"] == old["fate"], member
            continue
        q = Question.from_row({**old, "fate": {"status": "pending", "reason": "", "error": "", "duplicate_of": ""}})
        q.labels.pop("tier", None)
        reason = decide_rl(q, RlParams(**new))
        assert (row["fate"]["status"], row["fate"]["reason"]) == (("dropped", reason) if reason else ("kept", ""))
        if not reason:
            assert row["labels"]["tier"] == q.labels["tier"]
    assert sum(r["fate"]["status"] == "kept" for r in after.values()) == m["kinds"]["question"]["counts"]["kept"]
    # the select run's own verl files hold exactly its kept questions, with their new tiers
    written = {r["extra_info"]["id"]: r for f in (out / "rl").rglob("*.parquet") for r in pq.read_table(f).to_pylist()}
    kept_rows = {r["id"]: r for r in after.values() if r["fate"]["status"] == "kept"}
    assert written.keys() == kept_rows.keys()
    assert all(written[i]["extra_info"]["tier"] == kept_rows[i]["labels"]["tier"] for i in written)
    assert set(m["extras"]["curriculum"]["tiers"]) == {"hard", "easy"}


def test_select_on_an_sft_run_takes_responses_from_the_cache(corpus: dict[str, Path], tmp_path: Path) -> None:
    parent = tmp_path / "sft"
    run("sft", corpus, parent, config(corpus))
    cfg = config(corpus, select={"sft": {"too_easy": 1.0, "hopeless": 0.0, "drop_answer_leak": False}})
    out = tmp_path / "sel"
    assert main(["select", "--run", str(parent), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    rows = ledger(out)
    data = pq.read_table(out / "sft" / "part-00000.parquet").to_pylist()
    kept = [r for r in rows.values() if r["fate"]["status"] == "kept"]
    assert len(data) == len(kept) > 0
    for item in data:
        user, assistant = item["messages"]
        q = next(r for r in kept if user["content"].count(r["question"]))
        assert verify(assistant["content"], q["answer"], q["answer_type"]).correct  # a verified rollout
    assert (out / "dataset_info.json").is_file()


def test_no_secret_reaches_any_file_or_output_of_a_run(
    corpus: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials in the endpoint URL, a key in extra_body and a key in the environment: none of them
    is in any file the run writes (manifest, ledgers, tables, metrics, cache) nor in its output, even
    where an error names the endpoint (one question's rollout fails for good and is quarantined)."""
    from oai_server import OpenAIServer

    secrets = {"url": "urlsecretAAA111", "body": "bodysecretBBB222", "env": "envsecretCCC333"}
    monkeypatch.setenv("MMCURATE_TEST_KEY", secrets["env"])
    out, cache = tmp_path / "out", tmp_path / "cache"
    with OpenAIServer(corpus["model"], name="tiny") as srv:
        cfg = {
            "rollout": {
                "backend": "openai",
                "openai": {
                    "base_url": srv.base_url.replace("http://", f"http://mmuser:{secrets['url']}@"),
                    "model": "tiny",
                    "api_key_env": "MMCURATE_TEST_KEY",
                    "extra_body": {"api_key": secrets["body"]},
                    "batch_size": 1,
                    "retries": 0,
                },
                "sampling": SAMPLING,
                "prompt": {"image_placeholder": PLACEHOLDER},
                "cache": str(cache),
            }
        }
        path = tmp_path / "secret.yaml"
        path.write_text(yaml.safe_dump(cfg))
        srv.fail_next = [400, 400]  # a task's batch fails, then the task alone fails again
        m = run("rl", corpus, out, path)
        assert any(r.get("api_key") == secrets["body"] for r in srv.requests)  # the endpoint did get it
    written = [p for root in (out, cache) for p in root.rglob("*") if p.is_file()]
    kinds = {str(p.relative_to(out)).split("/")[0] if out in p.parents else "cache" for p in written}
    assert {"manifest.json", "units.json", "metrics.json", "summaries", "ledger", "quarantined", "rl"} <= kinds
    assert "cache" in kinds
    for p in written:
        data = p.read_bytes()
        assert not [k for k, v in secrets.items() if v.encode() in data], p
    captured = capfd.readouterr()
    assert not [k for k, v in secrets.items() if v in captured.out + captured.err]
    assert m["kinds"]["question"]["reasons"]["quarantined"].get("model_error") == 1
    (failed,) = [r for r in ledger(out).values() if r["fate"]["reason"] == "model_error"]
    assert "mmuser:<redacted>@127.0.0.1" in failed["fate"]["error"] and "HTTP 400" in failed["fate"]["error"]
    assert m["config"]["rollout"]["openai"]["extra_body"]["api_key"] == "<redacted>"


def test_bad_question_rows_cost_only_their_line(corpus: dict[str, Path], tmp_path: Path) -> None:
    """A field of the wrong type, a value nested too deep, a path out of the corpus, `"choices": 5`:
    each quarantines its own line; the good rows between them are graded on their merits."""
    import shutil

    shutil.copy(corpus["root"] / "img.png", tmp_path / "img.png")
    good = {"question": ROWS[1][0], "answer": ROWS[1][1], "answer_type": "text", "images": ["img.png"]}
    lines = [
        json.dumps(good),
        json.dumps({**good, "choices": 5}),
        '{"question": "which animal shown ?", "answer": ' + "[" * 50_000 + "]" * 50_000 + "}",
        json.dumps({**good, "images": ["../img.png"]}),
        json.dumps({**good, "images": ["http://example.com/img.png"]}),
        json.dumps({**good, "question": {"text": "a dict"}}),
        json.dumps({**good, "domain": ["a", "list"]}),
        json.dumps({**good, "question": ROWS[0][0], "answer": "2", "answer_type": "number"}),
    ]
    data = tmp_path / "q.jsonl"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(["rl", "--input", str(data), "--output", str(out), "--config", str(config(corpus)),
                 "--no-progress"]) == 0  # fmt: skip
    m = json.loads((out / "manifest.json").read_text())
    assert m["kinds"]["question"]["counts"]["input"] == len(lines) and m["accounting_ok"]
    fates = {k: (r["fate"]["status"], r["fate"]["reason"]) for k, r in ledger(out).items()}
    assert fates["line2"] == ("quarantined", "bad_question") and fates["line7"] == ("quarantined", "bad_question")
    assert fates["line3"] == ("quarantined", "bad_json")
    assert fates["line4"] == fates["line5"] == ("quarantined", "outside_root")
    assert fates["line6"] == ("quarantined", "bad_question")  # no question text: a dict is not one
    graded = [k for k, r in ledger(out).items() if r["scores"]["k"] is not None]
    assert sorted(graded) == ["line1", "line8"]


def test_rl_tiers_split_and_exports(corpus: dict[str, Path], tmp_path: Path) -> None:
    """Per-tier folders and a validation share chosen by question id; `mmcurate export` gives verl's
    rows and the SFT rows (images embedded) as datasets folders; the reward grades as selection did."""
    import datasets

    from mmcurate.rewards import compute_score
    from mmcurate.stages.trainer_formats import split_of

    out = tmp_path / "rl"
    run("rl", corpus, out, config(corpus, output={"per_tier": True, "val_fraction": 0.5}))
    files = sorted((out / "rl").rglob("*.parquet"))
    rows = [(f, r) for f in files for r in pq.read_table(f).to_pylist()]
    assert rows
    for f, r in rows:  # rl/{split}/{tier}/part-UUUUU.parquet
        info = r["extra_info"]
        assert (f.parent.parent.name, f.parent.name) == (info["split"], info["tier"])
        names = [Path(i["path"]).name for i in r["images"]]
        key = json.dumps([info["question"], info["answer"], info["choices"], names], ensure_ascii=False)
        assert info["split"] == split_of(key, 0.5)
        correct = compute_score(r["data_source"], BOX.format(info["answer"]), r["reward_model"]["ground_truth"], info)
        wrong = compute_score(r["data_source"], BOX.format("nothing"), r["reward_model"]["ground_truth"], info)
        assert correct["score"] == 1.0 and wrong["score"] == 0.0 and wrong["parsed"] == 1.0
    assert compute_score(rows[0][1]["data_source"], "no box", "2", rows[0][1]["extra_info"])["parsed"] == 0.0
    # The reward a trainer computes is the grade: every cached response of a kept question scores as graded.
    cache = cached_rollouts(corpus)
    for _, r in rows:
        info = r["extra_info"]
        graded = [c for c in cache if c["question_id"] == info["id"] and not c["blind"]]
        assert graded
        for c in graded:
            for text, correct in zip(c["responses"], c["correct"], strict=True):
                got = compute_score(r["data_source"], text, r["reward_model"]["ground_truth"], info)["score"]
                assert got == float(correct), text
    ids = [f"q{i}" for i in range(2000)]
    assert 0.45 < sum(split_of(i, 0.5) == "val" for i in ids) / len(ids) < 0.55
    assert all(split_of(i, 0.0) == "train" for i in ids)

    exported = tmp_path / "rl-hf"
    assert main(["export", "--run", str(out), "--output", str(exported)]) == 0
    loaded = datasets.load_from_disk(str(exported))
    by_split = {"train": "train", "val": "validation"}
    for split in {r["extra_info"]["split"] for _, r in rows}:
        assert loaded[by_split[split]].num_rows == sum(r["extra_info"]["split"] == split for _, r in rows)

    sft = tmp_path / "sft"
    run("sft", corpus, sft, config(corpus))
    exported = tmp_path / "sft-hf"
    assert main(["export", "--run", str(sft), "--output", str(exported)]) == 0
    shutil.rmtree(sft)  # the datasets folder needs nothing beside it
    train = datasets.load_from_disk(str(exported))["train"].cast_column(
        "images", datasets.List(datasets.Image(decode=False))
    )
    assert train.num_rows > 0
    for row in train:
        assert [i["bytes"] for i in row["images"]] == [(corpus["root"] / "img.png").read_bytes()]


def test_an_image_gone_when_the_trainer_file_is_written_quarantines_its_question(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    """SFT copies images beside its rows: one that cannot be read then is the question's `missing_image`
    in the ledger and the counts (never a crashed run, never a row without its image); a user's
    dataset_info.json entries stay beside ours."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(corpus["root"] / "img.png", data / "img.png")
    shutil.copy(corpus["data"], data / "questions.jsonl")
    parent = tmp_path / "sft"
    parent.mkdir()
    (parent / "dataset_info.json").write_text(json.dumps({"theirs": {"file_name": "theirs.json"}}))
    cfg = config(corpus)
    args = ["sft", "--input", str(data / "questions.jsonl"), "--output", str(parent), "--config", str(cfg)]
    assert main([*args, "--no-progress"]) == 0
    info = json.loads((parent / "dataset_info.json").read_text())
    assert set(info) == {"theirs", "mmcurate"} and info["mmcurate"]["file_name"] == "sft"
    before = json.loads((parent / "manifest.json").read_text())["kinds"]["question"]
    kept, missing = before["counts"]["kept"], before["reasons"]["quarantined"].get("missing_image", 0)
    assert kept > 0

    (data / "img.png").unlink()
    out = tmp_path / "sel"
    sel = config(corpus, select={"sft": {"response": "reference"}})
    assert main(["select", "--run", str(parent), "--output", str(out), "--config", str(sel), "--no-progress"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    q = m["kinds"]["question"]
    assert m["accounting_ok"] and q["counts"]["kept"] == 0
    assert q["reasons"]["quarantined"]["missing_image"] == kept + missing  # the parent's own stay as they were
    assert not list((out / "sft").glob("*.parquet")) and not (out / "dataset_info.json").exists()
    rows = ledger(out).values()
    gone = [r for r in rows if r["fate"]["reason"] == "missing_image" and "output" in {e["stage"] for e in r["errors"]}]
    assert len(gone) == kept


def test_trainer_rows_place_markers_once_and_point_at_images_they_do_not_embed() -> None:
    from mmcurate.stages.trainer_formats import media_name, user_text, verl_row, verl_schema

    q = _question("<image>Find x in the figure.", "3", "number", "math", "/data/a/img.png")
    assert user_text(q, "") == "<image>Find x in the figure."  # verl's geo3k rows place their marker
    q2 = _question("Find <image> x <image>", "3", "number", "math", "/data/a/img.png")
    assert user_text(q2, "").startswith("<image>Find") and user_text(q2, "").count("<image>") == 1
    row = verl_row(q, "mmcurate/math", "", None, "train", "{}")
    assert row["images"] == [{"image": "/data/a/img.png"}]  # no `bytes` key: verl would open None
    assert pa.Table.from_pylist([row], verl_schema(False)).num_rows == 1
    assert media_name(b"one", "/a/img.png", "images") != media_name(b"two", "/b/img.png", "images")
    assert media_name(b"one", "/a/img.png", "images") == media_name(b"one", "/b/other.png", "images")


def test_sft_parts_with_and_without_videos_load_as_one_table(corpus: dict[str, Path], tmp_path: Path) -> None:
    """One unit with a video question, one with images only: every part has the same schema, so the
    folder loads as one table (`load_dataset("parquet")`, what LLaMA-Factory calls on `sft/`), and
    each file is copied once, under its content name, however many questions use it."""
    from hf_loaders import datasets

    from mmcurate.pipelines.passrate import SFT
    from mmcurate.pipelines.run import new_run
    from mmcurate.schemas import Status
    from mmcurate.stages.io import Unit

    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really decoded here")
    image = corpus["root"] / "img.png"
    cfg = SFT.load_config(str(config(corpus)))
    units = [Unit(0, "jsonl", "a.jsonl"), Unit(1, "jsonl", "b.jsonl")]
    out = tmp_path / "out"
    run = new_run(SFT, cfg, ["a.jsonl", "b.jsonl"], units, str(out))
    questions = {
        0: [_question("what happens ?", "a jump", "text", "video", str(image))],
        1: [_question("which color ?", "red", "text", "general", str(image)) for _ in range(2)],
    }
    questions[0][0].video = str(video)
    questions[0][0].images = []
    for unit, qs in questions.items():
        for q in qs:
            q.source = Source(uri=f"u{unit}", unit=unit)
            q.keep()
        records = {"question": qs}
        media = SFT.fetch_media(records, run, cfg)
        assert all(q.fate.status == Status.KEPT for q in qs)
        files, _ = SFT.unit_outputs(unit, records, [], run, cfg, media)
        assert len([f for f in files if f.path.startswith(("images/", "videos/"))]) == 1
    rows = datasets.load_dataset("parquet", data_dir=str(out / "sft"), split="train", cache_dir=str(tmp_path / "hf"))
    got = sorted((r["images"], r["videos"], r["messages"][0]["content"].split("\n")[0]) for r in rows)
    assert [(len(i), len(v)) for i, v, _ in got] == [(0, 1), (1, 0), (1, 0)]
    with_video = next(g for g in got if g[1])
    assert with_video[2].startswith("<video>") and (out / with_video[1][0]).read_bytes() == video.read_bytes()
