"""Rollouts: prompts, the transformers backend on tiny models built here, the OpenAI-compatible
backend against a real HTTP server on loopback (tests/oai_server.py, generating with the same tiny
model), Beam's own vLLM chat handler against that server, and the fail-fast checks.
"""

from __future__ import annotations

import base64
import json
import pickle
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from mmcurate.schemas.base import Source
from mmcurate.schemas.question import AnswerType, Question
from mmcurate.stages.base import ModelUnavailable
from mmcurate.stages.rollout import (
    GLM_BOX_INSTRUCTION,
    EndpointError,
    OpenAIParams,
    OpenAIRolloutHandler,
    PromptParams,
    SamplingParams,
    TransformersParams,
    TransformersRolloutHandler,
    VLLMParams,
    VLLMRolloutHandler,
    build_messages,
    check_endpoint,
    check_model,
    check_vllm,
    prompt_hash,
)

sys.path.insert(0, str(Path(__file__).parent))
from oai_server import OpenAIServer
from tiny_models import build_tiny_llama, build_tiny_qwen2vl

TEXT = PromptParams(image_placeholder="<|image|>")
"""The prompt for the text-only tiny Llama: images become its <|image|> token."""


def _question(images: Sequence[str] = (), choices: Sequence[str] = (), text: str = "what color is the box") -> Question:
    return Question(
        id="q" + str(abs(hash((text, tuple(images), tuple(choices)))) % 10**8),
        source=Source(uri="mem://questions.jsonl", unit=0, index=0),
        question=text,
        answer="A",
        answer_type=AnswerType.CHOICE if choices else AnswerType.TEXT,
        choices=list(choices),
        images=list(images),
    )


def _chat(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text}]}]


PROMPTS = [
    _chat("what color is the box"),
    _chat("how many cat are shown in the picture ? A. two B. three"),
    [{"role": "system", "content": "answer yes or no"}, {"role": "user", "content": "is it red"}],
]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from conftest import _photo

    root = tmp_path_factory.mktemp("rollout_images")
    out = {}
    for name, fmt, seed, size in [("a", "JPEG", 0, (64, 48)), ("b", "PNG", 1, (100, 60)), ("c", "JPEG", 2, (64, 48))]:
        path = root / f"{name}.{fmt.lower()}"
        _photo(size, seed).save(path, format=fmt)
        out[name] = str(path)
    return out


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama") / "model")


@pytest.fixture(scope="module")
def handler(llama_dir: Path) -> TransformersRolloutHandler:
    return TransformersRolloutHandler(
        TransformersParams(model=str(llama_dir), batch_size=3), SamplingParams(k=4, max_tokens=12)
    )


@pytest.fixture(scope="module")
def llama(handler: TransformersRolloutHandler):
    return handler.load_model()


@pytest.fixture(scope="module")
def server(llama_dir: Path):
    with OpenAIServer(llama_dir, name="tiny") as srv:
        yield srv


@pytest.fixture
def srv(server: OpenAIServer) -> OpenAIServer:
    server.reset()
    yield server
    server.reset()


def _openai(srv: OpenAIServer, **kw) -> OpenAIRolloutHandler:
    sampling = kw.pop("sampling", SamplingParams(k=4, max_tokens=12))
    defaults = {"base_url": srv.base_url, "model": "tiny", "timeout": 20.0, "connect_timeout": 2.0}
    return OpenAIRolloutHandler(OpenAIParams(**{**defaults, **kw}), sampling)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- parameters ------------------------------------------------------------------------------------


def test_sampling_digest_is_stable_and_covers_every_field() -> None:
    base = SamplingParams()
    assert base.model_dump() == {
        "k": 8,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_tokens": 1024,
        "thinking": True,
        "seed": 0,
    }
    assert base.digest() == SamplingParams().digest() == SamplingParams(**json.loads(base.model_dump_json())).digest()
    assert len(base.digest()) == 64
    changed = [
        SamplingParams(k=16),
        SamplingParams(temperature=0.7),
        SamplingParams(top_p=0.9),
        SamplingParams(max_tokens=512),
        SamplingParams(thinking=False),
        SamplingParams(seed=None),
        SamplingParams(seed=1),
    ]
    assert len({s.digest() for s in [base, *changed]}) == 1 + len(changed)
    with pytest.raises(ValueError, match="extra"):
        SamplingParams(n=4)
    for bad in ({"k": 0}, {"temperature": -1}, {"top_p": 0}, {"max_tokens": 0}):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_backend_params_are_validated() -> None:
    with pytest.raises(ValueError, match="device"):
        TransformersParams(model="x", device="tpu")
    with pytest.raises(ValueError, match="dtype"):
        TransformersParams(model="x", dtype="int8")
    with pytest.raises(ValueError, match="batch"):
        TransformersParams(model="x", batch_size=2, min_batch_size=3)
    with pytest.raises(ValueError, match="base_url"):
        OpenAIParams(base_url="127.0.0.1:8000", model="m")
    with pytest.raises(ValueError, match="extra"):
        OpenAIParams(model="m", api_key="secret")  # keys come from the environment, never the config
    with pytest.raises(ValueError, match="extra"):
        OpenAIParams(model="m", backoff=1.0)  # the openai client backs off itself
    with pytest.raises(ValueError, match=r"rollout\.openai\.extra_body must not set \['n', 'seed'\]"):
        OpenAIParams(model="m", extra_body={"n": 2, "seed": 1, "top_k": 20})  # the client's extra_body would win


# -- prompts ---------------------------------------------------------------------------------------


def test_messages_inline_images_and_render_choices(images: dict[str, str]) -> None:
    q = _question([images["a"], images["b"]], ["two", "three "], "How many cats?")
    msgs = build_messages(q, PromptParams(), SamplingParams())
    assert [m["role"] for m in msgs] == ["user"]
    parts = msgs[0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    jpeg, png = (p["image_url"]["url"] for p in parts[:2])
    assert jpeg.startswith("data:image/jpeg;base64,") and png.startswith("data:image/png;base64,")
    assert base64.b64decode(jpeg.split(",", 1)[1]) == Path(images["a"]).read_bytes()
    assert parts[2]["text"] == f"How many cats?\nA. two\nB. three\n{GLM_BOX_INSTRUCTION}"


def test_video_is_a_video_part_unless_blind(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    q = Question(id="v", source=Source(uri="x", unit=0), question="what happens", answer="a", video=str(clip))
    parts = build_messages(q, PromptParams(), SamplingParams())[0]["content"]
    assert parts[0]["type"] == "video_url" and parts[0]["video_url"]["url"].startswith("data:video/mp4;base64,")
    assert [p["type"] for p in build_messages(q, PromptParams(), SamplingParams(), blind=True)[0]["content"]] == [
        "text"
    ]
    assert build_messages(q, TEXT, SamplingParams())[0]["content"][0] == {"type": "text", "text": "<|image|>"}


def test_blind_thinking_system_and_placeholder(images: dict[str, str]) -> None:
    q = _question([images["a"]], ["x", "y"])
    blind = build_messages(q, PromptParams(), SamplingParams(), blind=True)
    assert [p["type"] for p in blind[0]["content"]] == ["text"]
    assert (
        blind[0]["content"][0]["text"] == build_messages(q, PromptParams(), SamplingParams())[0]["content"][1]["text"]
    )

    nothink = build_messages(q, PromptParams(), SamplingParams(thinking=False), blind=True)
    assert nothink[0]["content"][0]["text"].endswith(GLM_BOX_INSTRUCTION + "/nothink")
    qwen3 = PromptParams(nothink_suffix=" /no_think", answer_instruction="")
    assert build_messages(q, qwen3, SamplingParams(thinking=False), blind=True)[0]["content"][0]["text"] == (
        "what color is the box\nA. x\nB. y /no_think"
    )

    sys_msgs = build_messages(q, PromptParams(system="You are GLM.", image_placeholder="<image>"), SamplingParams())
    assert sys_msgs[0] == {"role": "system", "content": "You are GLM."}
    assert sys_msgs[1]["content"][0] == {"type": "text", "text": "<image>"}


def test_prompt_hash_tracks_everything_the_model_sees(images: dict[str, str], tmp_path: Path) -> None:
    q = _question([images["a"]])
    p, s = PromptParams(), SamplingParams()
    h = prompt_hash(build_messages(q, p, s))
    assert h == prompt_hash(build_messages(q, p, s)) and len(h) == 64
    others = {
        "blind": prompt_hash(build_messages(q, p, s, blind=True)),
        "other image": prompt_hash(build_messages(_question([images["c"]]), p, s)),
        "template": prompt_hash(build_messages(q, PromptParams(answer_instruction="Answer briefly."), s)),
        "system": prompt_hash(build_messages(q, PromptParams(system="hi"), s)),
        "nothink": prompt_hash(build_messages(q, p, SamplingParams(thinking=False))),
    }
    assert h not in others.values() and len(set(others.values())) == len(others)
    # same path, new bytes: the hash follows the content, not the URI
    moved = tmp_path / "img.jpg"
    moved.write_bytes(Path(images["a"]).read_bytes())
    h1 = prompt_hash(build_messages(_question([str(moved)]), p, s))
    assert h1 == h
    moved.write_bytes(Path(images["c"]).read_bytes())
    assert prompt_hash(build_messages(_question([str(moved)]), p, s)) != h1
    # sampling that does not change the text leaves the prompt alone (it has its own digest)
    assert prompt_hash(build_messages(q, p, SamplingParams(k=2, temperature=0.5))) == h


# -- transformers backend --------------------------------------------------------------------------


def test_transformers_generates_k_real_samples(handler, llama) -> None:
    out = handler.run_inference(PROMPTS, llama)
    assert len(out) == len(PROMPTS) and all(len(samples) == 4 for samples in out)
    vocab = set(llama.tokenizer.get_vocab())
    for samples in out:
        assert len(set(samples)) > 1  # temperature 1 on a random model: the k samples differ
        for text in samples:
            tokens = llama.tokenizer(text, add_special_tokens=False)["input_ids"]
            assert 0 < len(tokens) <= 12  # max_tokens respected (the eos is cut, never decoded)
            assert all(t in vocab for t in text.split())
    assert out[0] != out[1]


def test_transformers_seed_reproduces_and_batches_do_not_matter(handler, llama) -> None:
    batch = handler.run_inference(PROMPTS, llama)
    assert handler.run_inference(PROMPTS, llama) == batch
    # each prompt's samples are seeded from (seed, prompt, index): alone, reordered or with other
    # prompts (other padding) they come out the same
    assert [handler.run_inference([m], llama)[0] for m in PROMPTS] == batch
    assert handler.run_inference(PROMPTS[::-1], llama) == batch[::-1]
    other = handler.run_inference(PROMPTS[:1], llama, {"sampling": {"k": 4, "max_tokens": 12, "seed": 1}})
    assert other[0] != batch[0]
    # a larger k extends the same samples
    more = handler.run_inference(PROMPTS[:1], llama, {"sampling": {"k": 6, "max_tokens": 12}})
    assert more[0][:4] == batch[0]
    # no seed: fresh randomness
    free = {"sampling": {"k": 4, "max_tokens": 12, "seed": None}}
    assert handler.run_inference(PROMPTS[:1], llama, free) != handler.run_inference(PROMPTS[:1], llama, free)


def test_transformers_temperature_and_top_p(handler, llama) -> None:
    greedy = handler.run_inference(PROMPTS[:2], llama, {"sampling": {"k": 3, "temperature": 0, "max_tokens": 8}})
    assert all(len(set(s)) == 1 for s in greedy)
    # greedy ignores the seed
    one = {"sampling": {"k": 1, "temperature": 0, "max_tokens": 8, "seed": 3}}
    assert handler.run_inference(PROMPTS[:1], llama, one) == [greedy[0][:1]]
    # a tiny top_p keeps only the most likely token: nucleus sampling becomes greedy
    narrow = handler.run_inference(PROMPTS[:2], llama, {"sampling": {"k": 3, "top_p": 1e-6, "max_tokens": 8}})
    assert narrow == greedy


def test_transformers_text_model_needs_a_placeholder_for_images(handler, llama, images) -> None:
    q = _question([images["a"]], ["red", "blue"])
    with pytest.raises(ValueError, match="image_placeholder"):
        handler.run_inference([build_messages(q, PromptParams(), SamplingParams())], llama)
    out = handler.run_inference([build_messages(q, TEXT, SamplingParams())], llama)
    assert len(out[0]) == 4


def test_inference_args_are_validated(handler) -> None:
    handler.validate_inference_args(None)
    handler.validate_inference_args({"sampling": {"k": 2}})
    with pytest.raises(ValueError, match="sampling"):
        handler.validate_inference_args({"temperature": 0.5})
    with pytest.raises(ValueError):
        handler.validate_inference_args({"sampling": {"k": 0}})
    assert handler.get_metrics_namespace() == "mmcurate_rollout"
    assert handler.batch_elements_kwargs() == {"min_batch_size": 3, "max_batch_size": 3}  # full batches by default


def test_run_inference_in_a_pipeline(handler, llama) -> None:
    expected = handler.run_inference(PROMPTS, llama)
    keyed = [(f"q{i}", m) for i, m in enumerate(PROMPTS)]
    with test_pipeline.TestPipeline() as p:
        out = (
            p
            | beam.Create(keyed)
            | RunInference(KeyedModelHandler(handler), inference_args={"sampling": {"k": 4, "max_tokens": 12}})
        )
        assert_that(out, equal_to([(f"q{i}", e) for i, e in enumerate(expected)]))


def test_transformers_vlm_path(tmp_path_factory: pytest.TempPathFactory, images: dict[str, str]) -> None:
    folder = build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny_qwen2vl") / "model")
    h = TransformersRolloutHandler(TransformersParams(model=str(folder)), SamplingParams(k=3, max_tokens=8))
    model = h.load_model()
    assert type(model.model).__name__ == "Qwen2VLForConditionalGeneration" and model.processor is not None
    qs = [_question([images["a"]]), _question([images["b"], images["c"]], ["x", "y"]), _question([])]
    msgs = [build_messages(q, PromptParams(), SamplingParams()) for q in qs]
    out = h.run_inference(msgs, model)
    assert [len(s) for s in out] == [3, 3, 3]
    assert [h.run_inference([m], model)[0] for m in msgs] == out
    # the pixels reach the model: the same question about another image is answered differently
    other = h.run_inference([build_messages(_question([images["c"]]), PromptParams(), SamplingParams())], model)
    assert other[0] != out[0]


# -- fail-fast checks ------------------------------------------------------------------------------


def test_unset_models_are_refused_by_name() -> None:
    # the defaults construct (a pipeline config holds every backend's section) but do not pass the checks
    with pytest.raises(ModelUnavailable, match=r"rollout\.transformers\.model is not set"):
        check_model(TransformersParams())
    with pytest.raises(ModelUnavailable, match=r"rollout\.openai\.model is not set"):
        check_endpoint(OpenAIParams())
    with pytest.raises(ModelUnavailable, match=r"rollout\.vllm\.model is not set"):
        check_vllm(VLLMParams())


def test_check_model(tmp_path: Path, llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_model(TransformersParams(model=str(llama_dir)))
    with pytest.raises(ModelUnavailable, match=r"rollout\.transformers\.model: .* does not exist"):
        check_model(TransformersParams(model=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable, match=r"rollout\.transformers\.model: .*no config\.json"):
        check_model(TransformersParams(model=str(tmp_path / "empty")))
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text("{}")
    with pytest.raises(ModelUnavailable, match="no weights"):
        check_model(TransformersParams(model=str(tmp_path / "noweights")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelUnavailable, match=r"rollout\.transformers\.model: 'zai-org/GLM-4.5V' .*not in the cache"):
        check_model(TransformersParams(model="zai-org/GLM-4.5V", cache_dir=str(tmp_path / "hf")))
    assert time.monotonic() - start < 5
    with pytest.raises(ModelUnavailable, match=r"rollout\.transformers\.model"):
        TransformersRolloutHandler(TransformersParams(model=str(tmp_path / "missing"))).load_model()


def test_check_endpoint(srv: OpenAIServer) -> None:
    check_endpoint(OpenAIParams(base_url=srv.base_url, model="tiny"))
    start = time.monotonic()
    with pytest.raises(ModelUnavailable, match=r"rollout\.openai\.base_url: .* does not answer"):
        check_endpoint(OpenAIParams(base_url=f"http://127.0.0.1:{_free_port()}/v1", model="tiny", connect_timeout=1))
    with pytest.raises(ModelUnavailable, match=r"rollout\.openai\.model: .* does not serve 'glm'.*\['tiny'\]"):
        check_endpoint(OpenAIParams(base_url=srv.base_url, model="glm"))
    with pytest.raises(ModelUnavailable, match=r"rollout\.openai\.base_url: .*HTTP 404"):
        check_endpoint(OpenAIParams(base_url=srv.base_url.removesuffix("/v1"), model="tiny"))
    assert time.monotonic() - start < 5


def test_check_endpoint_with_a_key(llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAIServer(llama_dir, name="tiny", api_key="sk-test") as locked:
        params = OpenAIParams(base_url=locked.base_url, model="tiny", api_key_env="MMCURATE_TEST_KEY")
        monkeypatch.delenv("MMCURATE_TEST_KEY", raising=False)
        with pytest.raises(ModelUnavailable, match=r"rollout\.openai\.api_key_env: .*\$MMCURATE_TEST_KEY.*401"):
            check_endpoint(params)
        assert locked.authorization == [None]  # no key: no Authorization header, not a placeholder
        monkeypatch.setenv("MMCURATE_TEST_KEY", "sk-test")
        check_endpoint(params)
        h = OpenAIRolloutHandler(params, SamplingParams(k=2, max_tokens=4))
        assert [len(s) for s in h.run_inference(PROMPTS[:1], h.load_model())] == [2]
        assert locked.authorization[1:] == ["Bearer sk-test"] * 2


# -- OpenAI-compatible backend ---------------------------------------------------------------------


def test_openai_equals_transformers_for_the_same_seed(srv, handler, llama) -> None:
    h = _openai(srv, max_concurrency=3)
    out = h.run_inference(PROMPTS, h.load_model())
    assert out == handler.run_inference(PROMPTS, llama)
    assert len(srv.requests) == len(PROMPTS)
    assert all(
        r["n"] == 4 and r["seed"] == 0 and r["max_tokens"] == 12 and r["temperature"] == 1.0 for r in srv.requests
    )


def test_openai_samples_follow_seed_and_max_tokens(srv) -> None:
    h = _openai(srv)
    client = h.load_model()
    a = h.run_inference(PROMPTS[:1], client, {"sampling": {"k": 3, "max_tokens": 5, "seed": 7}})
    assert a == h.run_inference(PROMPTS[:1], client, {"sampling": {"k": 3, "max_tokens": 5, "seed": 7}})
    assert a != h.run_inference(PROMPTS[:1], client, {"sampling": {"k": 3, "max_tokens": 5, "seed": 8}})
    assert all(len(s.split()) <= 5 for s in a[0])
    long = h.run_inference(PROMPTS[:1], client, {"sampling": {"k": 3, "max_tokens": 40, "seed": 7}})
    assert max(len(s.split()) for s in long[0]) > 5


def test_openai_passes_extra_body_and_sends_no_placeholder_key(srv) -> None:
    h = _openai(srv, api_key_env="", extra_body={"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}})
    assert [len(s) for s in h.run_inference(PROMPTS[:1], h.load_model())] == [4]
    (body,) = srv.requests
    assert body["top_k"] == 20 and body["chat_template_kwargs"] == {"enable_thinking": False} and body["n"] == 4
    assert srv.authorization == [None]


def test_openai_retries_5xx_and_429(srv) -> None:
    srv.fail_next, srv.retry_after = [503, 429, 502], 0.01  # Retry-After keeps the test fast
    h = _openai(srv, retries=3)
    out = h.run_inference(PROMPTS[:1], h.load_model())
    assert len(out[0]) == 4 and len(srv.requests) == 4

    srv.reset()
    srv.fail_next = [503] * 5
    h = _openai(srv, retries=2)
    with pytest.raises(EndpointError, match="failed 3 times; last: HTTP 503"):
        h.run_inference(PROMPTS[:1], h.load_model())
    assert len(srv.requests) == 3


def test_openai_honours_retry_after(srv) -> None:
    # the client's own first backoff is at most 0.5 s: waiting 1 s shows the server's Retry-After was followed
    srv.fail_next, srv.retry_after = [429], 1.0
    h = _openai(srv, retries=1)
    start = time.monotonic()
    assert [len(s) for s in h.run_inference(PROMPTS[:1], h.load_model())] == [4]
    assert time.monotonic() - start >= 1.0 and len(srv.requests) == 2


def test_openai_does_not_retry_client_errors(srv) -> None:
    h = _openai(srv, model="unknown", retries=3)
    with pytest.raises(EndpointError, match="HTTP 404"):
        h.run_inference(PROMPTS[:1], h.load_model())
    assert len(srv.requests) == 1


def test_openai_timeouts_and_dead_ports_are_retried_then_fail(srv) -> None:
    srv.delay = 1.0
    h = _openai(srv, timeout=0.2, retries=1)
    start = time.monotonic()
    with pytest.raises(EndpointError, match="ReadTimeout"):
        h.run_inference(PROMPTS[:1], h.load_model())
    assert time.monotonic() - start < 3 and len(srv.requests) == 2
    dead = _openai(srv, base_url=f"http://127.0.0.1:{_free_port()}/v1", retries=2, connect_timeout=1.0)
    with pytest.raises(EndpointError, match="ConnectionError"):
        dead.run_inference(PROMPTS[:1], dead.load_model())


def test_openai_tops_up_when_the_server_ignores_n(srv) -> None:
    srv.max_n = 1
    h = _openai(srv, sampling=SamplingParams(k=3, max_tokens=6, seed=5))
    out = h.run_inference(PROMPTS[:1], h.load_model())
    assert len(out[0]) == 3
    assert [(r["n"], r["seed"]) for r in srv.requests] == [(3, 5), (2, 6), (1, 7)]


def test_openai_puts_split_reasoning_back(srv, tmp_path_factory: pytest.TempPathFactory) -> None:
    reply = "<think> red </think> <|begin_of_box|> red <|end_of_box|>"
    trained = build_tiny_llama(tmp_path_factory.mktemp("trained") / "model", train=[(PROMPTS[0], reply)], steps=40)
    with OpenAIServer(trained, name="tiny") as thinking:
        thinking.split_think = True
        h = _openai(thinking, sampling=SamplingParams(k=2, max_tokens=12, temperature=0))
        out = h.run_inference(PROMPTS[:1], h.load_model())
    assert out[0] == [reply, reply]


def test_openai_handler_pickles_and_runs_in_a_pipeline(srv, handler, llama) -> None:
    h = pickle.loads(pickle.dumps(_openai(srv, batch_size=2)))
    expected = handler.run_inference(PROMPTS, llama)
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create(list(enumerate(PROMPTS))) | RunInference(KeyedModelHandler(h))
        assert_that(out, equal_to(list(enumerate(expected))))


# -- vLLM (Beam's handler) -------------------------------------------------------------------------


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("vllm") is not None, reason="vllm is installed: nothing to refuse"
)
def test_vllm_is_refused_without_vllm() -> None:
    with pytest.raises(ModelUnavailable, match=r"vllm is not installed: .*GPU host.*docs/rl\.md"):
        check_vllm()
    h = VLLMRolloutHandler(VLLMParams(model="zai-org/GLM-4.5V"))
    h = pickle.loads(pickle.dumps(h))  # builds and ships without vllm
    assert h.share_model_across_processes() and h.get_metrics_namespace() == "mmcurate_rollout"
    with pytest.raises(ModelUnavailable, match="vllm is not installed"):
        h.load_model()


class _ServerAt:
    """Stands in for Beam's `_VLLMModelServer` (the process running `vllm serve`): our server's port."""

    def __init__(self, port: int) -> None:
        self.port = port

    def get_server_port(self) -> int:
        return self.port

    def check_connectivity(self) -> None:
        pass


def test_vllm_handler_speaks_to_an_openai_server_through_beams_handler(srv, handler, llama) -> None:
    """Beam's VLLMChatModelHandler.run_inference (openai client, n/seed as request kwargs) against our
    server, which generates exactly like the transformers backend: only the vLLM process is missing."""
    pytest.importorskip("openai")
    h = VLLMRolloutHandler(VLLMParams(model="tiny"), SamplingParams(k=4, max_tokens=12))
    out = h.run_inference(PROMPTS, _ServerAt(srv.port))
    assert out == handler.run_inference(PROMPTS, llama)
    assert all(r["n"] == 4 and r["seed"] == 0 for r in srv.requests)
