"""Secret redaction: configs for manifests, free text (URLs, headers, tracebacks), the logging path,
and property tests (non-secret text unchanged, idempotence, no secret survives, bounded time)."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from mmcurate.schemas import redact as R
from mmcurate.schemas.redact import (
    REDACTED,
    RedactingFilter,
    clear_secrets,
    install_log_redaction,
    is_secret_key,
    redact,
    redact_text,
    register_secret,
    uninstall_log_redaction,
)

OPENAI_KEY = "sk-abc123def456ghi789jkl"
URL_KEY = "sk-live-123456789"
BEARER = "abcdef0123456789token"


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    clear_secrets()
    yield
    clear_secrets()


def example_config() -> dict[str, Any]:
    return {
        "rollout": {
            "backend": "openai",
            "openai": {
                "base_url": f"http://user:{URL_KEY}@127.0.0.1:8000/v1",
                "api_key_env": "OPENAI_API_KEY",
                "extra_body": {"api_key": OPENAI_KEY, "chat_template_kwargs": {"enable_thinking": False}},
                "headers": {"Authorization": f"Bearer {BEARER}"},
            },
            "sampling": {"k": 8, "temperature": 1.0, "max_tokens": 1024, "thinking": True},
        },
        "models": {"tokenizer": "Qwen/Qwen2.5-VL-7B-Instruct", "eos_token": "</s>", "key_column": "__key__"},
    }


# ------------------------------------------------------------------------------------------ configs


def test_example_config_has_no_secret_left() -> None:
    cfg = example_config()
    out = redact(cfg)
    dumped = json.dumps(out)
    for secret in (URL_KEY, OPENAI_KEY, BEARER):
        assert secret not in dumped
    oai = out["rollout"]["openai"]
    assert oai["base_url"] == f"http://user:{REDACTED}@127.0.0.1:8000/v1"
    assert oai["api_key_env"] == "OPENAI_API_KEY"
    assert oai["extra_body"] == {"api_key": REDACTED, "chat_template_kwargs": {"enable_thinking": False}}
    assert oai["headers"] == {"Authorization": REDACTED}
    assert out["rollout"]["sampling"] == cfg["rollout"]["sampling"]
    assert out["models"] == cfg["models"]
    assert cfg == example_config(), "the input is not modified"


def test_redact_registers_what_it_replaced() -> None:
    redact(example_config())
    message = (
        f"POST http://127.0.0.1:8000/v1/chat/completions failed: key {OPENAI_KEY} rejected; "
        f"retrying with {BEARER} and password {URL_KEY}"
    )
    out = redact_text(message)
    for secret in (URL_KEY, OPENAI_KEY, BEARER):
        assert secret not in out
    assert out.startswith("POST http://127.0.0.1:8000/v1/chat/completions failed: key ")


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "apikey",
        "apiKey",
        "api-key",
        "API_KEY",
        "OPENAI_API_KEY",
        "x-api-key",
        "X-API-Key",
        "token",
        "access_token",
        "session_token",
        "auth_token",
        "hf_token",
        "HF_TOKEN",
        "hfToken",
        "refresh_token",
        "X-Amz-Security-Token",
        "secret",
        "client_secret",
        "secret_access_key",
        "aws_secret_access_key",
        "password",
        "db_password",
        "dbPassword",
        "passwd",
        "pwd",
        "credential",
        "credentials",
        "authorization",
        "Authorization",
        "Proxy-Authorization",
        "private_key",
        "privateKey",
        "access_key",
        "cookie",
        "Set-Cookie",
        "account_key",
        "Ocp-Apim-Subscription-Key",
        "api_key2",
        "rollout.openai.api_key",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "api_key_env",
        "API_KEY_ENV",
        "hf_token_env",
        "password_var",
        "token_env_var",
        "max_tokens",
        "max_new_tokens",
        "tokens",
        "tokenizer",
        "skip_special_tokens",
        "eos_token",
        "pad_token",
        "pad_token_id",
        "bos_token_id",
        "image_token",
        "key",
        "__key__",
        "keep",
        "monkey",
        "key_column",
        "sort_keys",
        "dedup_key",
        "keyword",
        "token_uri",
        "secret_name",
        "author",
        "authority",
        "base_url",
        "chat_template_kwargs",
        "",
        "___",
    ],
)
def test_non_secret_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_pair_prefilter_covers_every_secret_word() -> None:
    """`redact_text` skips the pair scan when no hint occurs: each secret name must contain a hint."""
    words = [*R._SECRET_WORDS, *R._SECRET_WORD_ENDINGS, *R._QUERY_ONLY_NAMES, "token", "key"]
    assert [w for w in words if not R._PAIR_HINT_RE.search(w)] == []


def test_types_and_unset_values_kept() -> None:
    value = {
        "token": None,
        "password": "",
        "use_auth_token": True,
        "api_key": 123456789,
        "credentials": {"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----abc"},
        "list": [("a", 1), {"b"}, frozenset({"c"})],
        "n": 1.5,
        7: "int key",
    }
    out = redact(value)
    assert out["token"] is None and out["password"] == "" and out["use_auth_token"] is True
    assert out["api_key"] == REDACTED and out["credentials"] == REDACTED
    assert out["list"] == [("a", 1), {"b"}, frozenset({"c"})]
    assert isinstance(out["list"][0], tuple)
    assert out["n"] == 1.5 and out[7] == "int key"
    assert "123456789" not in redact_text("id 123456789"), "a numeric secret is registered too"
    assert REDACTED in redact_text("key: -----BEGIN PRIVATE KEY-----abc")


def test_pydantic_model_and_its_dump() -> None:
    class OpenAIParams(BaseModel):
        base_url: str = "https://sk-proj-0123456789abcdef@api.example.com/v1"
        api_key_env: str = "OPENAI_API_KEY"
        api_key: str | None = "s3cr3t-from-yaml"
        max_tokens: int = 256

    model = OpenAIParams()
    expected = {
        "base_url": f"https://{REDACTED}@api.example.com/v1",
        "api_key_env": "OPENAI_API_KEY",
        "api_key": REDACTED,
        "max_tokens": 256,
    }
    assert redact(model.model_dump(mode="json")) == expected
    assert redact(model) == expected


def test_strings_anywhere_are_scrubbed() -> None:
    out = redact({"inputs": [f"s3://ak:{OPENAI_KEY}@bucket/a.tar", "plain"], "note": f"see Bearer {BEARER}"})
    assert out == {"inputs": [f"s3://ak:{REDACTED}@bucket/a.tar", "plain"], "note": f"see Bearer {REDACTED}"}


# ------------------------------------------------------------------------------------------- text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "POST http://user:key@host/v1/chat/completions failed",
            f"POST http://user:{REDACTED}@host/v1/chat/completions failed",
        ),
        ("https://user:p@ss:w0rd@host:8443/x", f"https://user:{REDACTED}@host:8443/x"),
        ("https://ghp_token123@github.com/org/repo.git", f"https://{REDACTED}@github.com/org/repo.git"),
        ("postgresql+psycopg2://app:hunter22@db:5432/x", f"postgresql+psycopg2://app:{REDACTED}@db:5432/x"),
        ("'redis://:topsecret@cache'", f"'redis://:{REDACTED}@cache'"),
        ("http://user:@host/", "http://user:@host/"),
        ("http://@host/", "http://@host/"),
        ("http://host:8000/v1 mail admin@example.com", "http://host:8000/v1 mail admin@example.com"),
        ("http://host/users/me@example.com", "http://host/users/me@example.com"),
    ],
)
def test_url_userinfo(text: str, expected: str) -> None:
    assert redact_text(text) == expected


S3_V4 = (
    "https://bucket.s3.us-east-1.amazonaws.com/shard-000.tar?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600"
    "&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEFoaCXVzLWVhc3QtMSJHMEUCIQ%2Bexample"
    "&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
)
S3_V2 = "https://bucket.s3.amazonaws.com/a.jpg?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1700000000&Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D"
GCS_V4 = (
    "https://storage.googleapis.com/bucket/a.jpg?X-Goog-Algorithm=GOOG4-RSA-SHA256"
    "&X-Goog-Credential=sa%40proj.iam.gserviceaccount.com%2F20240101%2Fauto%2Fstorage%2Fgoog4_request"
    "&X-Goog-Date=20240101T000000Z&X-Goog-Expires=900&X-Goog-SignedHeaders=host"
    "&X-Goog-Signature=5eaf4bd3a7c1e0f0d0a1b2c3d4e5f60718293a4b5c6d7e8f"
)
GCS_V2 = "https://storage.googleapis.com/bucket/a.jpg?GoogleAccessId=sa@proj.iam.gserviceaccount.com&Expires=1700000000&Signature=Zm9vYmFy%2Fbaz%3D%3D"
AZURE_SAS = "https://acct.blob.core.windows.net/c/a.jpg?sv=2022-11-02&se=2024-01-01T00%3A00%3A00Z&sr=b&sp=r&sig=9Xo%2Babc%2Fdef%3D"


@pytest.mark.parametrize(
    ("url", "secrets", "kept"),
    [
        (
            S3_V4,
            ["AKIAIOSFODNN7EXAMPLE", "aws4_request", "IQoJb3JpZ2lu", "aeeed9bbccd4d02ee5c0109b86"],
            ["X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Date=20240101T000000Z", "X-Amz-Expires=3600", "shard-000.tar"],
        ),
        (S3_V2, ["AKIAIOSFODNN7EXAMPLE", "vjbyPxybdZaNmGa"], ["Expires=1700000000", "/a.jpg?"]),
        (GCS_V4, ["gserviceaccount", "5eaf4bd3a7c1e0f0"], ["X-Goog-Date=20240101T000000Z", "X-Goog-Expires=900"]),
        (GCS_V2, ["gserviceaccount", "Zm9vYmFy"], ["Expires=1700000000"]),
        (
            AZURE_SAS,
            ["9Xo%2Babc"],
            ["sv=2022-11-02", "se=2024-01-01T00%3A00%3A00Z", "sr=b", "sp=r", "&sig=" + REDACTED],
        ),
    ],
)
def test_presigned_urls(url: str, secrets: list[str], kept: list[str]) -> None:
    message = f"GET {url} failed: 403 Forbidden"
    out = redact_text(message)
    for secret in secrets:
        assert secret not in out
    for part in kept:
        assert part in out
    assert out.startswith("GET https://") and out.endswith(" failed: 403 Forbidden")


def test_presigned_url_params_exactly() -> None:
    url = "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2Fx&X-Amz-Date=1&X-Amz-Signature=ab12"
    assert redact_text(url) == (
        f"https://b.s3.amazonaws.com/k?X-Amz-Credential={REDACTED}&X-Amz-Date=1&X-Amz-Signature={REDACTED}"
    )
    assert redact_text("https://h/p?token=abc&page=2#top") == f"https://h/p?token={REDACTED}&page=2#top"
    assert (
        redact_text("https://maps.example.com/api?key=AIzaSyA-1&q=x")
        == f"https://maps.example.com/api?key={REDACTED}&q=x"
    )
    assert redact_text("https://h/p?a=1&amp;password=hunter2") == f"https://h/p?a=1&amp;password={REDACTED}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer xyz", f"Authorization: Bearer {REDACTED}"),
        ("authorization: bearer abc123", f"authorization: bearer {REDACTED}"),
        ("Bearer eyJhbGciOi.J9.abc-_/+=", f"Bearer {REDACTED}"),
        ("sent Bearer xyz.", f"sent Bearer {REDACTED}."),
        ("Basic dXNlcjpwYXNz", f"Basic {REDACTED}"),
        ("Authorization: Basic dXNlcjpwYXNz==", f"Authorization: Basic {REDACTED}"),
        ("Authorization: token ghp_xyz", f"Authorization: token {REDACTED}"),
        ("Authorization: raw-key-without-scheme", f"Authorization: {REDACTED}"),
        ("-H 'X-Api-Key: abc123'", f"-H 'X-Api-Key: {REDACTED}'"),
        (
            "headers={'Authorization': 'Bearer abc123', 'Content-Type': 'application/json'}",
            f"headers={{'Authorization': 'Bearer {REDACTED}', 'Content-Type': 'application/json'}}",
        ),
        ('{"headers": {"Authorization": "Bearer abc123"}}', f'{{"headers": {{"Authorization": "Bearer {REDACTED}"}}}}'),
        (
            "use Bearer auth (i.e. Authorization: Bearer YOUR_KEY)",
            f"use Bearer auth (i.e. Authorization: Bearer {REDACTED})",
        ),
    ],
)
def test_auth_headers(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("OpenAI(api_key='sk-x', max_tokens=16)", f"OpenAI(api_key='{REDACTED}', max_tokens=16)"),
        ('{"api_key": "abc", "model": "qwen"}', f'{{"api_key": "{REDACTED}", "model": "qwen"}}'),
        ('body="{\\"api_key\\": \\"abc\\"}"', f'body="{{\\"api_key\\": \\"{REDACTED}\\"}}"'),
        ("HF_TOKEN=hf_abc python run.py", f"HF_TOKEN={REDACTED} python run.py"),
        ("password: hunter22.", f"password: {REDACTED}."),
        ("host=db user=app password=pw123 dbname=x", f"host=db user=app password={REDACTED} dbname=x"),
        (
            "AccountName=a;AccountKey=Zm9v+YmFy==;EndpointSuffix=core",
            f"AccountName=a;AccountKey={REDACTED};EndpointSuffix=core",
        ),
        ("api_key=None token: null password=''", "api_key=None token: null password=''"),
        ("api_key=SecretStr('**********')", "api_key=SecretStr('**********')"),
        ("api_key_env=OPENAI_API_KEY max_tokens=128", "api_key_env=OPENAI_API_KEY max_tokens=128"),
    ],
)
def test_secret_pairs_in_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "token",
    [
        "sk-proj-Abc123def456ghi789JKL",
        "hf_" + "aBcDeFgHiJ" * 3 + "xyzw",
        "ghp_" + "A1b2C3d4E5" * 3 + "f6G7h8",
        "AKIAIOSFODNN7EXAMPLE",
        "AIza" + "SyA-1234567890abcdefghijklmnopqrstu",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ],
)
def test_known_token_shapes(token: str) -> None:
    assert redact_text(f"request failed (credential {token}): 401") == f"request failed (credential {REDACTED}): 401"


def test_registered_secret_in_traceback() -> None:
    secret = "s3cr3t-Value/42@x"
    assert register_secret(secret)
    assert not register_secret("abc12"), "shorter than MIN_SECRET_LEN"
    assert not register_secret("********"), "nothing to hide"
    assert not register_secret("redacted")
    try:
        raise RuntimeError(f"connect to cache failed with {secret} (encoded: s3cr3t-Value%2F42%40x); abc12 ok")
    except RuntimeError:
        text = traceback.format_exc()
    out = redact_text(text)
    assert secret not in out and "s3cr3t" not in out
    assert f"RuntimeError: connect to cache failed with {REDACTED} (encoded: {REDACTED}); abc12 ok" in out
    assert out.startswith("Traceback (most recent call last):\n")
    assert "test_registered_secret_in_traceback" in out, "the rest of the traceback is kept"


def test_register_secret_is_thread_safe() -> None:
    secrets = [f"secret-{i:04d}-xyz" for i in range(400)]
    threads = [
        threading.Thread(target=lambda chunk=secrets[i::8]: [register_secret(s) for s in chunk]) for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = redact_text(" ".join(secrets))
    assert out == " ".join([REDACTED] * len(secrets))


# ----------------------------------------------------------------------------------------- logging


@pytest.fixture
def root_stream() -> Iterator[io.StringIO]:
    """A real StreamHandler on the root logger, redaction installed; everything restored afterwards."""
    root = logging.getLogger()
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    install_log_redaction()
    install_log_redaction()  # idempotent
    try:
        yield buf
    finally:
        uninstall_log_redaction()
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_install_is_idempotent(root_stream: io.StringIO) -> None:
    root = logging.getLogger()
    assert sum(isinstance(f, RedactingFilter) for f in root.filters) == 1
    for handler in root.handlers:
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    handle = logging.Handler.handle
    install_log_redaction()
    assert logging.Handler.handle is handle


def test_uninstall_restores_logging() -> None:
    original = logging.Handler.handle
    install_log_redaction()
    assert logging.Handler.handle is not original
    uninstall_log_redaction()
    assert logging.Handler.handle is original
    root = logging.getLogger()
    assert not any(isinstance(f, RedactingFilter) for t in (root, *root.handlers) for f in t.filters)


def test_child_logger_with_args(root_stream: io.StringIO) -> None:
    url = f"http://user:{URL_KEY}@127.0.0.1:8000/v1/chat/completions"
    log = logging.getLogger("mmcurate.tests.redact.child")
    log.info("POST %s failed after %d tries", url, 3)
    log.warning("headers %(h)s", {"h": {"Authorization": f"Bearer {BEARER}"}})
    log.info("Authorization: Bearer %s", BEARER)
    out = root_stream.getvalue()
    assert (
        "mmcurate.tests.redact.child INFO POST "
        f"http://user:{REDACTED}@127.0.0.1:8000/v1/chat/completions failed after 3 tries"
    ) in (out)
    assert f"{{'Authorization': 'Bearer {REDACTED}'}}" in out
    assert f"Authorization: Bearer {REDACTED}" in out
    assert URL_KEY not in out and BEARER not in out


def test_logger_exception(root_stream: io.StringIO) -> None:
    url = f"https://user:{URL_KEY}@api.example.com/v1/chat/completions"
    register_secret(OPENAI_KEY)
    log = logging.getLogger("mmcurate.tests.redact.exc")
    try:
        raise ConnectionError(f"POST {url} failed: key {OPENAI_KEY} rejected")
    except ConnectionError:
        log.exception("rollout of %s failed", url)
    out = root_stream.getvalue()
    assert URL_KEY not in out and OPENAI_KEY not in out
    assert f"rollout of https://user:{REDACTED}@api.example.com/v1/chat/completions failed" in out
    assert "Traceback (most recent call last):" in out
    assert (
        f"ConnectionError: POST https://user:{REDACTED}@api.example.com/v1/chat/completions failed: "
        f"key {REDACTED} rejected"
    ) in out


def test_handler_added_after_install_on_non_propagating_logger(root_stream: io.StringIO) -> None:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    log = logging.getLogger("mmcurate.tests.redact.isolated")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log.error("token=%s", OPENAI_KEY)
        log.info("plain", extra={"url": f"s3://ak:{BEARER}@bucket/k", "api_key": OPENAI_KEY})
        handler.setFormatter(logging.Formatter("%(message)s %(url)s %(api_key)s"))
        log.info("with extras", extra={"url": f"s3://ak:{BEARER}@bucket/k", "api_key": OPENAI_KEY})
    finally:
        log.removeHandler(handler)
        log.propagate = True
    out = buf.getvalue()
    assert out.splitlines() == [f"token={REDACTED}", "plain", f"with extras s3://ak:{REDACTED}@bucket/k {REDACTED}"]
    assert root_stream.getvalue() == ""


def test_filter_alone_on_a_handler() -> None:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.addFilter(RedactingFilter())
    parent = logging.getLogger("mmcurate.tests.redact.filter")
    parent.addHandler(handler)
    parent.setLevel(logging.INFO)
    try:
        logging.getLogger("mmcurate.tests.redact.filter.child").info("GET %s", f"https://{BEARER}@host/x")
        logging.getLogger("mmcurate.tests.redact.filter.child").info({"password": "hunter22", "n": 1})
        logging.getLogger("mmcurate.tests.redact.filter.child").info("100%% of %s", "shards")
        logging.getLogger("mmcurate.tests.redact.filter.child").info("50% literal, no args")
    finally:
        parent.removeHandler(handler)
    assert buf.getvalue().splitlines() == [
        f"GET https://{REDACTED}@host/x",
        f"{{'password': '{REDACTED}', 'n': 1}}",
        "100% of shards",
        "50% literal, no args",
    ]


def test_broken_format_string_is_reported_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("mmcurate.tests.redact.broken")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("two %s %s", f"http://u:{OPENAI_KEY}@h/")  # one arg short: logging reports the error
    finally:
        log.removeHandler(handler)
        log.propagate = True
    assert OPENAI_KEY not in buf.getvalue() + capsys.readouterr().err


# ------------------------------------------------------------------------------------------ properties

_NO_PATTERN_TEXT = st.text(st.characters(blacklist_characters=":=@", blacklist_categories=("Cs",)), max_size=300)

_BENIGN = st.sampled_from(
    [
        "max_tokens=128",
        "max_new_tokens: 64",
        "tokenizer: Qwen/Qwen2.5-VL",
        "key_column=__key__",
        "monkey: 3",
        "keep=True",
        "sort_keys=True",
        "api_key_env=OPENAI_API_KEY",
        "hf_token_env: HF_TOKEN",
        "eos_token: </s>",
        "pad_token_id=0",
        "http://127.0.0.1:8000/v1/chat/completions",
        "s3://bucket/prefix/shard-{000000..000009}.tar",
        "https://example.com/a.jpg?page=2&limit=10#frag",
        "admin@example.com",
        "12:30:00",
        "ratio=0.25",
        "KeyError: 'api_key'",
        "token",
        "tokens",
        "Traceback (most recent call last):",
        'File "/x/y.py", line 3, in <module>',
        "{'k': 8, 'temperature': 1.0}",
        "ValueError: bad value",
        "the bearer of bad news",
        "Bearer auth",
    ]
)
_SEPARATORS = st.sampled_from([" ", "\n", ", ", "; ", " | ", "\t", " (", ") "])


@st.composite
def benign_log_text(draw: st.DrawFn) -> str:
    pieces = draw(st.lists(st.tuples(_BENIGN, _SEPARATORS), max_size=12))
    return "".join(p + s for p, s in pieces)


@given(_NO_PATTERN_TEXT)
def test_text_without_patterns_is_unchanged(text: str) -> None:
    assert redact_text(text) == text


@given(benign_log_text())
def test_benign_log_text_is_unchanged(text: str) -> None:
    assert redact_text(text) == text


_ADVERSARIAL = st.sampled_from(
    [
        "http://",
        "s3://",
        "user",
        ":",
        "@",
        "/",
        "?",
        "&",
        "=",
        "#",
        "token",
        "api_key",
        "password",
        "sig",
        "key",
        "Authorization",
        "Bearer ",
        "Basic ",
        " ",
        "'",
        '"',
        "\\",
        "(",
        ")",
        "{",
        "}",
        ".",
        "abc123",
        "sk-abcdef1234567890xyz",
        "AKIAIOSFODNN7EXAMPLE",
        REDACTED,
        "<",
        ">",
        "redacted",
        "hunter22",
        "None",
    ]
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_ADVERSARIAL, st.text(max_size=5)), max_size=30).map("".join))
def test_idempotent(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once


@settings(max_examples=200)
@given(st.lists(st.one_of(_ADVERSARIAL, st.text(max_size=5)), max_size=30).map("".join))
def test_idempotent_with_registered_secret(text: str) -> None:
    register_secret("hunter22")
    once = redact_text(text)
    assert "hunter22" not in once
    assert redact_text(once) == once


_SECRET_VALUES = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_~+%"), min_size=8, max_size=40
).filter(lambda s: any(c.isalnum() for c in s) and s.lower() not in R._NOT_SECRET_LITERALS)  # `token=None` is kept
_FORMS = st.sampled_from(
    [
        "http://user:{}@host/v1",
        "https://{}@github.com/x",
        "https://h/p?x=1&token={}&y=2",
        "https://h/o?X-Amz-Signature={}",
        "https://h/o?sig={}&sp=r",
        "api_key='{}'",
        '"password": "{}"',
        "Authorization: Bearer {}",
        "Bearer {}",
        "HF_TOKEN={}",
    ]
)


@given(_FORMS, _SECRET_VALUES, _NO_PATTERN_TEXT, _NO_PATTERN_TEXT)
def test_no_secret_survives(form: str, secret: str, before: str, after: str) -> None:
    text = f"{before} {form.format(secret)} {after}"
    out = redact_text(text)
    assert out.startswith(f"{before} ") and out.endswith(f" {after}")
    middle = out[len(before) + 1 : len(out) - len(after) - 1]
    assert secret not in middle and REDACTED in middle


_JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
_KEYS = st.one_of(
    st.sampled_from(["api_key", "token", "password", "max_tokens", "api_key_env", "headers", "Authorization", "x"]),
    st.text(max_size=8),
)
_JSON = st.recursive(
    _JSON_LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=4),
    max_leaves=30,
)


def _secret_values_masked(value: Any) -> bool:
    if isinstance(value, dict):
        return all(
            (v in (REDACTED, None, True, False, "", [], {}) if is_secret_key(k) else True) and _secret_values_masked(v)
            for k, v in value.items()
        )
    if isinstance(value, list):
        return all(map(_secret_values_masked, value))
    return True


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(_JSON)
@example(["000000", {"api_key": "000000"}])  # a secret's value before its key: hidden in the first pass too
def test_redact_structure(value: Any) -> None:
    out = redact(value)
    assert _secret_values_masked(out)
    assert redact(out) == out, "redacting a redacted config changes nothing"
    clear_secrets()


# ------------------------------------------------------------------------------------------ speed


@pytest.mark.parametrize(
    "text",
    [
        "a" * 200_000,
        "a." * 100_000,
        "a-" * 100_000,
        "a://" * 50_000,
        "x=" * 100_000,
        "token=" * 30_000,
        "http://a:" + "b" * 200_000,
        "http://" + "@" * 100_000,
        "Bearer " * 30_000,
        "k: v, " * 30_000,
        ("ValueError: bad value for field max_tokens=128 at http://127.0.0.1:8000/v1 (retry 3)\n") * 3_000,
    ],
)
def test_bounded_time(text: str) -> None:
    start = time.perf_counter()
    redact_text(text)
    assert time.perf_counter() - start < 2.0


def test_typical_error_message_is_fast() -> None:
    for i in range(50):
        register_secret(f"registered-secret-{i}")
    message = (
        "POST http://127.0.0.1:8000/v1/chat/completions failed: HTTP 500 Internal Server Error "
        "{'error': {'message': 'max_tokens must be <= 4096', 'type': 'BadRequestError'}}"
    )
    n = 2_000
    start = time.perf_counter()
    for _ in range(n):
        redact_text(message)
    per_call = (time.perf_counter() - start) / n
    assert per_call < 500e-6, f"{per_call * 1e6:.0f} us per message"
    assert R.redact_text(message) == message
