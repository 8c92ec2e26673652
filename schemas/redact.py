"""Keep secrets (API keys, tokens, passwords, credentials in URLs) out of manifests, logs and error text.

Run configs are written into ``manifest.json`` and error messages reach logs and quarantine tables;
neither may carry a credential, so both pass through here first:

* ``redact(cfg.model_dump(mode="json"))``: a deep copy of a JSON-like structure in which every value
  under a secret-looking key is ``REDACTED`` and every string is scrubbed by ``redact_text``. The
  values it replaced are registered (``register_secret``), so an error message quoting one later is
  scrubbed as well.
* ``redact_text(message)``: scrubs free text and leaves every other byte as it was, so the message
  stays useful: URL userinfo (``scheme://user:<redacted>@host``, ``scheme://<redacted>@host``),
  secret query parameters and ``key=value`` / ``key: value`` / ``"key": "value"`` pairs whose key is
  secret (``?X-Amz-Signature=``, ``&sig=``, ``api_key='...'``, ``Authorization: Bearer ...``),
  ``Bearer`` / ``Basic`` credentials, well-known token formats (``sk-...``, ``hf_...``, ``ghp_...``,
  ``AKIA...``, JWTs) and every registered secret. It is idempotent.
* ``install_log_redaction()`` (in ``redact_log``, importable from here too): every log record, from any
  library, is scrubbed before it is emitted.

Key names are matched on their words (``snake_case``, ``kebab-case`` and ``camelCase`` are split),
never on substrings: ``api_key``, ``hf_token``, ``client_secret``, ``X-Api-Key``, ``Authorization``
are secret; ``max_tokens``, ``tokenizer``, ``key_column``, ``monkey``, ``eos_token`` are not, and
neither is ``api_key_env`` (it names an environment variable; the value there is not the secret).

Stdlib only and no other mmcurate imports: logging setup and error paths use it, so it must import
cheaply and never fail.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

if TYPE_CHECKING:  # resolved lazily at run time, see `__getattr__` at the bottom
    from .redact_log import RedactingFilter, install_log_redaction, redact_record, uninstall_log_redaction

__all__ = [
    "MIN_SECRET_LEN",
    "REDACTED",
    "RedactingFilter",
    "clear_secrets",
    "install_log_redaction",
    "is_secret_key",
    "redact",
    "redact_field",
    "redact_record",
    "redact_text",
    "register_secret",
    "uninstall_log_redaction",
]

REDACTED = "<redacted>"
"""What a secret is replaced by: visible (the value existed), never reversible."""

MIN_SECRET_LEN = 6
"""Registered secrets shorter than this are ignored: scrubbing ``"abc"`` everywhere would mangle text."""

# --------------------------------------------------------------------------------------- key names

_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# A key ending in one of these names the place a secret lives (`api_key_env: OPENAI_API_KEY`).
_NAME_SUFFIXES = frozenset({"env", "var", "envvar"})
# A key whose last word is one of these holds a secret.
_SECRET_WORDS = frozenset(
    {"auth", "authorization", "credential", "credentials", "cookie", "cookies"}
    | {"passphrase", "passwd", "password", "pwd", "secret", "secrets"}
)
# ... or a compound word ending in one of these (`hftoken`, `apikey`, `xapikey`, `dbpassword`).
_SECRET_WORD_ENDINGS = ("token", "secret", "password", "passwd", "apikey", "accesskey", "secretkey", "privatekey")
# `<qualifier>_key` is secret (`api_key`, `secret_access_key`); a bare `key` (`__key__`, `sort_key`) is not.
_KEY_QUALIFIERS = frozenset(
    {"access", "account", "api", "auth", "client", "encryption", "license", "master"}
    | {"private", "secret", "session", "signing", "ssh", "storage", "subscription"}
)
# `<word>_token` is a tokenizer's special token, not a credential (`eos_token: "</s>"`).
_TOKENIZER_WORDS = frozenset(
    {"bos", "eos", "pad", "unk", "cls", "sep", "mask", "im", "special", "default"}  # the classic special tokens
    | {"begin", "end", "start", "stop", "first", "last", "new", "next"}  # boundaries
    | {"box", "think", "placeholder", "image", "img", "video", "vision", "audio"}  # markup and media
)
# Secret only as URL query parameters (presigned S3 / GCS / Azure SAS URLs, Google `?key=`).
_QUERY_ONLY_NAMES = frozenset(
    {"key", "sig", "signature", "x-amz-signature", "x-goog-signature", "awsaccesskeyid", "googleaccessid"}
)
_QUERY_SEPARATORS = frozenset({"?", "&", ";"})


@lru_cache(maxsize=4096)
def is_secret_key(name: str) -> bool:
    """Whether a config key, header or parameter name holds a secret, judged on its last words."""
    words = [w.lower() for w in _WORD_RE.findall(name) if not w.isdigit()]
    if not words or words[-1] in _NAME_SUFFIXES:
        return False
    last, prev = words[-1], (words[-2] if len(words) > 1 else "")
    if last == "key":
        return prev in _KEY_QUALIFIERS
    if last == "token":
        return prev not in _TOKENIZER_WORDS
    return last in _SECRET_WORDS or last.endswith(_SECRET_WORD_ENDINGS)


def _is_secret_name(name: str, text: str, start: int) -> bool:
    """`is_secret_key`, plus the names that are secret only as query parameters (`?sig=`)."""
    if is_secret_key(name):
        return True
    return text[start - 1 : start] in _QUERY_SEPARATORS and name.lower() in _QUERY_ONLY_NAMES


# -------------------------------------------------------------------------------- registered secrets


def _has_secret_content(value: str) -> bool:
    """Something to hide: a letter or digit (`"******"` and `"--"` are not secrets)."""
    return any(c.isalnum() for c in value)


def _acceptable_secret(value: str) -> bool:
    """Long enough not to be a common word, has something to hide, and cannot clash with the marker."""
    return (
        len(value) >= MIN_SECRET_LEN and _has_secret_content(value) and REDACTED not in value and value not in REDACTED
    )


def _variants(value: object) -> set[str]:
    """The literal and its URL-encoded spellings (a password with `@` appears as `%40` in a URL)."""
    if not isinstance(value, str):
        return set()
    value = value.strip()
    if not _acceptable_secret(value):
        return set()
    return {v for v in (value, quote(value, safe=""), quote_plus(value, safe="")) if _acceptable_secret(v)}


class _SecretRegistry:
    """Literal secrets to scrub from any text, as one alternation regex compiled on first use.

    Compiling lazily keeps registering many secrets linear (`redact` of a big config registers each
    value). Readers take the compiled pattern without locking (an attribute read is atomic and a
    compiled pattern immutable) unless it is stale; writers serialise on the lock. The marker is the
    first alternative so that a scan never starts a match inside an existing marker (idempotence).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._stale = False

    def add(self, values: Iterable[object]) -> None:
        new = set().union(*(_variants(v) for v in values))
        with self._lock:
            if new - self._secrets:
                self._secrets |= new
                self._stale = True

    def clear(self) -> None:
        with self._lock:
            self._secrets.clear()
            self._pattern, self._stale = None, False

    @property
    def pattern(self) -> re.Pattern[str] | None:
        if not self._stale:
            return self._pattern
        with self._lock:
            if self._stale:
                ordered = sorted(self._secrets, key=len, reverse=True)  # longest first: no partial leftovers
                self._pattern = re.compile("|".join(map(re.escape, [REDACTED, *ordered])))
                self._stale = False
            return self._pattern


_REGISTRY = _SecretRegistry()


def register_secret(value: str) -> bool:
    """Scrub this literal (and its URL-encoded forms) from all later text; False if it is ignored.

    Values shorter than `MIN_SECRET_LEN`, without letters or digits (`"******"`), or overlapping the
    marker are ignored. Thread-safe.
    """
    _REGISTRY.add([value])
    return bool(_variants(value))


def clear_secrets() -> None:
    """Forget every registered secret (tests; a long-lived process that switches configs)."""
    _REGISTRY.clear()


# ------------------------------------------------------------------------------------- text patterns

_MARKER = re.escape(REDACTED)
# `scheme://userinfo@`: the userinfo runs to the last `@` before the path, so `p@ss` is covered whole.
_USERINFO_RE = re.compile(
    r"(?<![A-Za-z0-9+.\-])(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)"
    rf"(?P<userinfo>(?:{_MARKER}|[^\s/?#\"<>\\`{{}}|^])*)@"
)
# `name<sep>value`: `?sig=v`, `&token=v`, `api_key='v'`, `"password": "v"`, `Authorization: Bearer v`.
_SCHEMES = r"Bearer|Basic|Digest|Token|Bot|ApiKey|Negotiate"
_PAIR_NAME_RE = re.compile(r"(?<![\w.\-])(?P<name>[A-Za-z_][\w.\-]*)(?P<sep>\\?[\"']?[ \t]*[:=][ \t]*)")
# The value, matched only after a secret name (so a non-secret pair never costs a scan of its value).
_PAIR_VALUE_RE = re.compile(
    rf"(?:(?i:{_SCHEMES})[ \t]+)?"
    r"(?:\"(?P<dq>[^\"\n]*)\"|'(?P<sq>[^'\n]*)'|\\\"(?P<eq>(?:[^\"\\\n]|\\[^\"\n])*)\\\""
    rf"|(?P<bare>(?:{_MARKER}|[^\s\"'&,;<>()\[\]{{}}\\])+))"
)
# Every secret name contains one of these: text without any has no secret pair to look for.
_PAIR_HINT_RE = re.compile(r"(?i)token|key|secret|pass|pwd|auth|cred|cookie|sig|access")
_SCHEME_PREFIX_RE = re.compile(rf"(?i:{_SCHEMES})[ \t]+(?=\S)")
_NOT_SECRET_LITERALS = frozenset({"null", "none", "nil", "true", "false", "undefined"})
# A bare `Bearer xyz` / `Basic xyz` anywhere (HTTP auth schemes are capitalised in practice).
# The lookahead keeps a credential from ending inside a word or before a marker (idempotence).
_AUTH_RE = re.compile(
    rf"(?<![\w\-])(?:Bearer|Basic)[ \t]+(?P<cred>(?:{_MARKER}|[A-Za-z0-9\-._~+/%])+=*)(?!{_MARKER}|[A-Za-z0-9\-._~+/%])"
)
_PROSE_WORDS = frozenset(
    {"access", "auth", "authentication", "authorization", "credentials", "header", "realm", "scheme", "token"}
)
# Credentials recognisable by their shape alone, wherever they appear.
_KNOWN_TOKEN_RE = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:"
    r"sk-(?=[A-Za-z0-9_\-]*[0-9])[A-Za-z0-9_\-]{16,}"  # OpenAI / Anthropic style keys
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"  # GitHub
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])"  # AWS access key ids
    r"|AIza[0-9A-Za-z_\-]{35}(?![A-Za-z0-9_\-])"  # Google API keys
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"  # JWTs
    r")"
)

_Found = list[str] | None
"""Where `redact` collects the secrets it scrubs from strings (to register them); None in `redact_text`."""


def _collect(found: _Found, value: str) -> None:
    if found is not None:
        found.append(value)


def _userinfo_sub(m: re.Match[str], found: _Found) -> str:
    """`user:pass@` keeps the user; a userinfo without a colon is itself the token."""
    user, colon, password = m["userinfo"].partition(":")
    secret, kept = (password, f"{user}:") if colon else (user, "")
    if not secret:
        return m[0]
    _collect(found, secret)
    return f"{m['scheme']}{kept}{REDACTED}@"


def _quoted_span(v: re.Match[str], group: str, found: _Found) -> tuple[int, int] | None:
    """The span to mask inside quotes; an auth scheme word in front (`"Bearer ..."`) is kept."""
    start, end = v.span(group)
    value = v[group]
    prefix = _SCHEME_PREFIX_RE.match(value)
    if prefix:
        start += prefix.end()
        value = value[prefix.end() :]
    if not _has_secret_content(value):
        return None
    _collect(found, value)
    return start, end


def _bare_span(v: re.Match[str], found: _Found) -> tuple[int, int] | None:
    """The span to mask in an unquoted value; `None`/`null`, calls (`SecretStr(...)`) and `***` are kept."""
    start, end = v.span("bare")
    value = v["bare"].rstrip(".:")  # sentence punctuation after the value
    if not _has_secret_content(value) or value.lower() in _NOT_SECRET_LITERALS or v.string.startswith("(", end):
        return None
    _collect(found, value)
    return start, start + len(value)


def _pair_span(m: re.Match[str], found: _Found) -> tuple[int, int] | None:
    """The span of the value to mask when the pair's name is secret, else None."""
    if not _is_secret_name(m["name"], m.string, m.start()):
        return None
    v = _PAIR_VALUE_RE.match(m.string, m.end())
    if v is None:
        return None
    for group in ("dq", "sq", "eq"):
        if v[group] is not None:
            return _quoted_span(v, group, found)
    return _bare_span(v, found)


def _sub_pairs(text: str, found: _Found) -> str:
    """Mask the values of secret `name=value` pairs.

    A manual scan rather than `re.sub`: a pair whose name is not secret (`http://...?token=x` read as
    `http: //...`) must not swallow the pairs inside its value, so the scan resumes right after its
    separator, and its value is never matched at all (linear time on `x=x=x=...`).
    """
    parts: list[str] = []
    last = pos = 0
    while (m := _PAIR_NAME_RE.search(text, pos)) is not None:
        span = _pair_span(m, found)
        if span is None:
            pos = m.end()
            continue
        parts += [text[last : span[0]], REDACTED]
        last = pos = span[1]
    return "".join([*parts, text[last:]]) if parts else text


def _auth_sub(m: re.Match[str], found: _Found) -> str:
    """`Bearer xyz` -> `Bearer <redacted>`; `Bearer auth` (prose) is left alone."""
    cred = m["cred"]
    core = cred.rstrip(".")
    if not core or core.lower() in _PROSE_WORDS:
        return m[0]
    _collect(found, core)
    return f"{m.string[m.start() : m.start('cred')]}{REDACTED}{cred[len(core) :]}"


def _known_token_sub(m: re.Match[str], found: _Found) -> str:
    _collect(found, m[0])
    return REDACTED


def _scrub(text: str, found: _Found) -> str:
    """All passes, cheapest guards first; structural passes run before the shape-only one so that a
    whole value (`password=abc-sk-...`) is masked rather than the recognisable part of it."""
    pattern = _REGISTRY.pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    if "://" in text:
        text = _USERINFO_RE.sub(partial(_userinfo_sub, found=found), text)
    if ("=" in text or ":" in text) and _PAIR_HINT_RE.search(text):
        text = _sub_pairs(text, found)
    if "Bearer" in text or "Basic" in text:
        text = _AUTH_RE.sub(partial(_auth_sub, found=found), text)
    return _KNOWN_TOKEN_RE.sub(partial(_known_token_sub, found=found), text)


_MAX_PASSES = 4


def _scrub_to_fixpoint(text: str, found: _Found) -> str:
    """Repeat `_scrub` while it changes something: a masked value can make a neighbouring pattern
    match differently (`Bearer token=x` -> `Bearer token=<redacted>`), and the result must be stable
    (`redact_text` is idempotent). Text with nothing to hide costs one pass."""
    for _ in range(_MAX_PASSES):
        scrubbed = _scrub(text, found)
        if scrubbed == text:
            break
        text = scrubbed
    return text


def redact_text(text: str) -> str:
    """Scrub secrets from free text (error messages, tracebacks, URLs); other bytes are kept as they are."""
    if not isinstance(text, str):
        text = str(text)
    return _scrub_to_fixpoint(text, None) if text else text


# --------------------------------------------------------------------------------------- structures


def _collect_leaves(value: object, found: _Found) -> None:
    """Every string / number under a secret key, so later text quoting it is scrubbed too."""
    if found is None or value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        found.append(value)
        prefix = _SCHEME_PREFIX_RE.match(value)  # `Bearer abc`: `abc` alone may be quoted later
        if prefix:
            found.append(value[prefix.end() :])
    elif isinstance(value, (int, float)):
        found.append(str(value))
    elif isinstance(value, Mapping):
        for item in value.values():
            _collect_leaves(item, found)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _collect_leaves(item, found)


def _mask(value: Any, found: _Found) -> Any:
    """The value of a secret key: the marker, unless there is nothing to hide (None, a flag, empty)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (str, Mapping, list, tuple)) and not value:
        return value
    _collect_leaves(value, found)
    return REDACTED


def _redact_item(key: object, value: Any, found: _Found) -> Any:
    if isinstance(key, str) and is_secret_key(key):
        return _mask(value, found)
    return _redact_value(value, found)


def _redact_collection(value: list | tuple | set | frozenset, found: _Found) -> Any:
    items = [_redact_value(v, found) for v in value]
    if isinstance(value, tuple):
        return tuple(items)
    if isinstance(value, frozenset):
        return frozenset(items)
    if isinstance(value, set):
        return set(items)
    return items


def _redact_value(value: Any, found: _Found) -> Any:
    if isinstance(value, str):
        return _scrub_to_fixpoint(value, found)
    if isinstance(value, Mapping):
        return {
            (_scrub_to_fixpoint(k, found) if isinstance(k, str) else k): _redact_item(k, v, found)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return _redact_collection(value, found)
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):  # a pydantic model instance
        return _redact_value(dump(mode="json"), found)
    return value


def redact(value: Any, *, register: bool = True) -> Any:
    """A redacted deep copy of a JSON-like structure (e.g. `model_dump(mode="json")`), for manifests.

    Values under secret keys (`is_secret_key`) become `REDACTED` (None, booleans and empty values are
    kept: nothing to hide, and they show whether a secret was set); every string, keys included, goes
    through `redact_text`. Everything it replaced is registered (unless `register` is false, as for
    log records), so an error message quoting a secret later is scrubbed too. Dicts, lists, tuples and
    sets are copied; other leaves are returned as they are; a pydantic model is dumped first.
    """
    return _redacting(partial(_redact_value, value), register)


def redact_field(key: object, value: Any, *, register: bool = True) -> Any:
    """`value` as `redact` treats it under `key` in a mapping: masked if the key is secret, else
    redacted; the key itself is left as it is (a log record's `extra=` field keeps its name)."""
    return _redacting(partial(_redact_item, key, value), register)


def _redacting(redactor: Callable[[_Found], Any], register: bool) -> Any:
    """Run a structure redactor, registering the secrets it replaced when asked to."""
    found: _Found = [] if register else None
    result = redactor(found)
    if found:
        _REGISTRY.add(found)
        # A secret found under its key may also stand earlier in the structure, as a bare value the
        # first pass had no reason to hide (`["sk-1", {"api_key": "sk-1"}]`): now registered, it is.
        result = redactor([])
    return result


# ------------------------------------------------------------------------------------------- logging
# `redact_log` holds the logging half and imports this module, so its names are resolved on first use
# (PEP 562): importing either module first works, and `import ...redact` stays cheap.

_LOG_NAMES = frozenset({"RedactingFilter", "install_log_redaction", "redact_record", "uninstall_log_redaction"})


def __getattr__(name: str) -> Any:
    if name in _LOG_NAMES:
        from . import redact_log

        value = getattr(redact_log, name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LOG_NAMES})
