"""The grounding corpus's box questions graded by `mmcurate rl`, with real generation by a tiny model.

`mmcurate demo --corpus grounding` writes `questions/part-*.jsonl` (answers `[x1,y1,x2,y2]` on GLM's
0-1000 grid, images relative to the output folder). A tiny Llama (tests/tiny_models.py) is fitted for
a few steps so that per question text it answers the reference box (GLM box of the reference grid
string), a box far from it (IoU < 0.5), or a 50/50 mix of the two. The model is text-only (the image is
a placeholder token), so two demo questions that share a phrase share the model's answer: the second
is then graded against its own reference, which is where IoU (not string equality) decides.
Expectations are recomputed from the stored responses with the project's verifier, never hard-coded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

import mmcurate.rewards
from mmcurate.cli import main
from mmcurate.schemas import AnswerType, Question, Source
from mmcurate.stages import rollout as ro
from mmcurate.stages.passrate_select import RlParams, decide_rl
from mmcurate.stages.trainer_formats import data_source_of, verl_schema
from mmcurate.stages.verify import VerifyParams, verify

tiny_models = pytest.importorskip("tiny_models")
pytestmark = pytest.mark.slow

BOX = "<|begin_of_box|>{}<|end_of_box|>"
PLACEHOLDER = "<|image|>"
SAMPLING = {"k": 8, "temperature": 1.0, "top_p": 0.9, "max_tokens": 24, "thinking": True, "seed": 0}
"""24 new tokens: a GLM box of four 3-digit numbers is 19 tokens with the digit-level tokenizer. top_p 0.9:
the fitted tokens hold over 0.9 of the mass, so a 19-token box is not spoilt by one stray tail sample at
temperature 1 (at top_p 1 one in eight was), while the mix's two 50/50 first digits both stay in."""
FAR = ("[0,0,60,60]", "[940,940,999,999]", "[0,940,60,999]", "[940,0,999,60]")
"""Corner boxes: the first with IoU < 0.5 to every reference of a question text is its wrong answer."""
WORDS = ["[", "]", "Where", "where", "square", "circle", "Give", "give", "bounding", "grid"]
"""Added to tiny_models' word-level vocabulary: the brackets and the demo phrases' nouns."""
ORDINARY = {"question": "how many cat shown ?", "answer": "2", "answer_type": "number", "domain": "counting"}
"""A text/number question for the ordinary RL run whose verl schema the box rows must share."""

_word_tokenizer = tiny_models.build_tokenizer


def _grid_tokenizer(extra_special: Any = ()) -> Any:
    """tiny_models' tokenizer with single digits and brackets as tokens and no spaces on decoding: its
    word-level vocabulary maps `[` and a 3-digit number to <unk>, so no grid box could be written."""
    from tokenizers import decoders, pre_tokenizers

    fast = _word_tokenizer(extra_special)
    fast.add_tokens(WORDS)
    backend = fast.backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    backend.decoder = decoders.Fuse()
    return fast


def _fit(folder: Path, train: list[tuple[list[dict[str, Any]], str]]) -> Path:
    """`build_tiny_llama` with the digit-level tokenizer (its vocabulary size, its fit, saved with it)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # faster than sharing two busy cores: the model is far too small to split
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(tiny_models, "build_tokenizer", _grid_tokenizer)
            return tiny_models.build_tiny_llama(folder, train=train, steps=400, lr=5e-3)
    finally:
        torch.set_num_threads(threads)


def _far_from(refs: list[str]) -> str:
    """A corner box the verifier grades wrong against every reference in `refs`."""
    for box in FAR:
        if not any(verify(BOX.format(box), ref, "box").correct for ref in refs):
            return box
    raise AssertionError(f"no corner box is far from all of {refs}")


def _plan(questions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Question text -> what the model is fitted to answer: `reference` (the first question's box),
    `far` or `mix` (one of each). A text several questions share is answered with the first one's
    reference; of the texts asked once the last is the mix, the others alternate far and reference."""
    texts: dict[str, list[str]] = {}
    for q in questions:
        texts.setdefault(q["question"], []).append(q["answer"])
    single = [t for t, refs in texts.items() if len(refs) == 1]
    plan = {}
    for text, refs in texts.items():
        far = _far_from(refs)
        if len(refs) > 1:
            kind = "reference"
        else:
            kind = "mix" if text == single[-1] else ("far", "reference")[single.index(text) % 2]
        seen = {"reference": [refs[0]], "far": [far], "mix": [refs[0], far]}[kind]
        plan[text] = {"kind": kind, "fitted": refs[0], "far": far, "seen": seen}
    assert {p["kind"] for p in plan.values()} == {"reference", "far", "mix"}
    return plan


def _question(text: str, answer: str, kind: str, domain: str) -> Question:
    return Question(
        id="x",
        source=Source(uri="u", unit=0),
        question=text,
        answer=answer,
        answer_type=AnswerType(kind),
        images=["img.png"],
        domain=domain,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("grounding-rl")
    assert main(["demo", "--corpus", "grounding", "--workdir", str(root / "work"), "--no-progress"]) == 0
    out = root / "work" / "grounding-output"
    questions = [
        json.loads(x) for f in sorted((out / "questions").glob("part-*.jsonl")) for x in f.read_text().splitlines()
    ]
    plan = _plan(questions)

    prompt = ro.PromptParams(image_placeholder=PLACEHOLDER)
    sampling = ro.SamplingParams(**SAMPLING)
    train = []
    for text, p in plan.items():
        q = _question(text, p["fitted"], "box", "grounding")
        train += [(ro.build_messages(q, prompt, sampling), BOX.format(r)) for r in p["seen"]]
        train.append((ro.build_messages(q, prompt, sampling, blind=True), BOX.format(p["far"])))
    q = _question(ORDINARY["question"], ORDINARY["answer"], ORDINARY["answer_type"], ORDINARY["domain"])
    train += [(ro.build_messages(q, prompt, sampling), BOX.format(r)) for r in ("2", "3")]
    train.append((ro.build_messages(q, prompt, sampling, blind=True), BOX.format("4")))
    model = _fit(root / "model", train)

    ordinary = root / "ordinary"
    ordinary.mkdir()
    Image.new("RGB", (32, 24), (200, 30, 30)).save(ordinary / "img.png")
    (ordinary / "questions.jsonl").write_text(json.dumps({**ORDINARY, "images": ["img.png"]}) + "\n")
    return {"root": root, "out": out, "questions": questions, "plan": plan, "model": model, "ordinary": ordinary}


def _config(corpus: dict[str, Any], name: str, **read: Any) -> Path:
    cfg = {
        "read": read,
        "rollout": {
            "backend": "transformers",
            "transformers": {"model": str(corpus["model"]), "device": "cpu", "batch_size": 8},
            "sampling": SAMPLING,
            "prompt": {"image_placeholder": PLACEHOLDER},
            "cache": str(corpus["root"] / "cache"),
        },
    }
    path = corpus["root"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _rl(inputs: list[Path], out: Path, cfg: Path) -> dict[str, Any]:
    argv = ["rl", "--input", *map(str, inputs), "--output", str(out), "--config", str(cfg), "--no-progress"]
    assert main(argv) == 0
    return json.loads((out / "manifest.json").read_text())


def _ledger(out: Path) -> dict[str, dict[str, Any]]:
    files = sorted((out / "ledger" / "question").glob("*.parquet"))
    return {r["id"]: r for f in files for r in pq.read_table(f).to_pylist()}


def _verl(out: Path) -> tuple[list[dict[str, Any]], list[pa.Schema]]:
    files = sorted((out / "rl").rglob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()], [pq.read_schema(f) for f in files]


def _rollouts(cache: Path) -> list[dict[str, Any]]:
    return [r for f in sorted(cache.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def _check_grades(m: dict[str, Any], rows: dict[str, dict[str, Any]], cache: Path) -> dict[str, float]:
    """Each pass rate is the share of the k responses whose box the verifier (with the run's settings)
    grades correct: IoU >= the threshold against the question's own reference. Blind ones: none."""
    settings = VerifyParams.model_validate(m["config"]["verify"])
    threshold = settings.box.iou_threshold
    rollouts = _rollouts(cache)
    rates = {}
    for qid, r in rows.items():
        mine = [x for x in rollouts if x["question_id"] == qid]
        (seen,) = [x for x in mine if not x["blind"]]
        (blind,) = [x for x in mine if x["blind"]]
        assert len(seen["responses"]) == len(blind["responses"]) == SAMPLING["k"]
        verdicts = [
            verify(t, r["answer"], "box", settings.convention, **settings.kwargs("box")) for t in seen["responses"]
        ]
        assert all(v.parsed and v.correct == (v.score >= threshold) for v in verdicts)  # v.score: the IoU
        scores = dict(r["scores"])
        rates[qid] = scores["pass_rate"]
        assert rates[qid] == pytest.approx(sum(v.correct for v in verdicts) / SAMPLING["k"])
        assert seen["correct"] == [v.correct for v in verdicts]  # the stored grades are the verifier's
        blind_ok = [verify(t, r["answer"], "box").correct for t in blind["responses"]]
        assert scores["blind_pass_rate"] == pytest.approx(sum(blind_ok) / SAMPLING["k"]) == 0.0
    return rates


def _check_fitted(plan: dict[str, dict[str, Any]], rows: dict[str, dict[str, Any]], rates: dict[str, float]) -> None:
    """What the fit made of each question text; a phrase two images share is graded per reference."""
    shared: dict[str, float] = {}
    for r in rows.values():
        p, rate = plan[r["question"]], rates[r["id"]]
        if r["answer"] != p["fitted"]:  # the model answers the first image's box for both
            assert p["kind"] == "reference"
            shared[r["answer"]] = rate
            assert rate == float(verify(BOX.format(p["fitted"]), r["answer"], "box").correct), (r["answer"], rate)
        elif p["kind"] == "mix":
            assert 0.0 < rate < 1.0, (r["question"], rate)
        else:
            assert rate == (1.0 if p["kind"] == "reference" else 0.0), (r["question"], p["kind"], rate)
    # The demo's two red squares overlap with IoU < 0.5, its two blue circles with IoU >= 0.5: the
    # other image's box fails the one and passes the other, though no response is its answer string.
    assert set(shared.values()) == {0.0, 1.0}, shared


def _check_fates(m: dict[str, Any], rows: dict[str, dict[str, Any]]) -> set[str]:
    """Fates and tiers as the run's RL selection config decides them from the ledger's grades; the kept ids."""
    params = RlParams(**m["config"]["select"]["rl"])
    fates = {}
    for qid, r in rows.items():
        q = Question.from_row({**r, "fate": {"status": "pending", "reason": "", "error": "", "duplicate_of": ""}})
        q.labels.pop("tier", None)
        reason = decide_rl(q, params)
        fates[qid] = (r["fate"]["status"], r["fate"]["reason"])
        assert fates[qid] == (("dropped", reason) if reason else ("kept", "")), (r["question"], r["scores"])
        if not reason:
            assert r["labels"]["tier"] == q.labels["tier"]
    assert {("dropped", "too_easy"), ("dropped", "hopeless"), ("kept", "")} <= set(fates.values())
    return {qid for qid, (status, _) in fates.items() if status == "kept"}


def test_grounding_questions_grade_by_iou_and_write_verl_rows(corpus: dict[str, Any], tmp_path: Path) -> None:
    out, plan = corpus["out"], corpus["plan"]
    cfg = _config(corpus, "grounding", image_root=str(out))
    m = _rl(sorted((out / "questions").glob("part-*.jsonl")), tmp_path / "rl", cfg)
    assert m["accounting_ok"], m.get("accounting")
    counts = m["kinds"]["question"]["counts"]
    rows = _ledger(tmp_path / "rl")
    assert counts["input"] == len(rows) == len(corpus["questions"]) and counts["quarantined"] == 0  # images found
    assert {(r["question"], r["answer"]) for r in rows.values()} == {
        (q["question"], q["answer"]) for q in corpus["questions"]
    }
    rates = _check_grades(m, rows, corpus["root"] / "cache")
    _check_fitted(plan, rows, rates)
    kept = _check_fates(m, rows)

    # verl rows: the kept questions, in the ordinary (number) RL run's schema, the reference as ground truth
    verl, schemas = _verl(tmp_path / "rl")
    assert sorted(row["extra_info"]["id"] for row in verl) == sorted(kept)
    om = _rl([corpus["ordinary"] / "questions.jsonl"], tmp_path / "ordinary", _config(corpus, "ordinary"))
    assert om["kinds"]["question"]["counts"]["kept"] == 1
    ordinary_rows, ordinary_schemas = _verl(tmp_path / "ordinary")
    assert [r["extra_info"]["answer_type"] for r in ordinary_rows] == ["number"]
    written = verl_schema(m["config"]["output"]["embed_images"]).remove_metadata()
    for schema in schemas:
        assert schema.equals(ordinary_schemas[0], check_metadata=True)
        assert schema.remove_metadata().equals(written)
    output = m["config"]["output"]
    for row in verl:
        r = rows[row["extra_info"]["id"]]
        assert row["reward_model"] == {"style": "rule", "ground_truth": r["answer"]}
        assert row["extra_info"]["answer"] == r["answer"] and row["extra_info"]["answer_type"] == "box"
        assert row["ability"] == row["extra_info"]["domain"] == r["domain"] == "grounding"
        assert row["data_source"] == data_source_of("grounding", output["data_source"], output["data_sources"])
        assert row["images"][0]["bytes"] == (out / r["images"][0]).read_bytes()  # the demo's stored image
        assert row["extra_info"]["pass_rate"] == rates[r["id"]]

        # verl's custom reward entry point, called as verl calls it: the reference 1, the far box 0
        reward = {"data_source": row["data_source"], "ground_truth": r["answer"], "extra_info": row["extra_info"]}
        good = mmcurate.rewards.compute_score(solution_str=BOX.format(r["answer"]), **reward)
        bad = mmcurate.rewards.compute_score(solution_str=BOX.format(plan[r["question"]]["far"]), **reward)
        assert good == {"score": 1.0, "parsed": 1.0, "partial": 1.0}
        assert bad["score"] == 0.0 and bad["parsed"] == 1.0 and bad["partial"] < 0.5
