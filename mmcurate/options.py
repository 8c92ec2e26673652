"""The command line's strictness: what is not ours must be an option Beam knows.

Beam's own parsing drops what it does not know with a warning ("Discarding unparseable args"), so
a misspelled `--overwirte` used to run to success. Here every argument our sub-command does not
take is parsed with Beam's option classes; what is left is an error that names the closest option
of either set. A bad value of a Beam option (`--direct_num_workers=abc`) is a one-line error, not
Beam's whole usage text. Beam's import-time warnings (a missing GCP client library on a machine
that does not use GCP) are silenced before Beam is imported.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

IMPORT_NOISE = ("apitools not found",)
"""Warnings Beam logs on the root logger while it is imported, whatever the command."""


class UsageError(Exception):
    """A command line that cannot mean what the user wants (exit status 2, like argparse)."""


class _ImportNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(IMPORT_NOISE)


def quiet_beam_imports() -> None:
    """Drop Beam's import-time warnings (idempotent)."""
    root = logging.getLogger()
    if not any(isinstance(f, _ImportNoise) for f in root.filters):
        root.addFilter(_ImportNoise())


def runner_path(args: Sequence[str]) -> str | None:
    """The `--runner` value resolved as Beam's `create_runner` resolves it: a known name (`direct`,
    `DirectRunner`) becomes its dotted path; anything else is returned as it was given."""
    from apache_beam.runners.runner import _RUNNER_MAP

    ap = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    ap.add_argument("--runner")
    ap.error = _raise  # type: ignore[method-assign]  # a bare `--runner`: Beam's parser says it later
    try:
        name = ap.parse_known_args(list(args))[0].runner
    except UsageError:
        return None
    if name is None:
        return None
    return _RUNNER_MAP.get(name.lower(), _RUNNER_MAP.get(name.lower() + "runner", name))


def import_runner_options(args: Sequence[str]) -> str | None:
    """Import the module of the runner `--runner` names, so that the options it declares outside
    pipeline_options (`DaskOptions`: `--dask_client_address`) are known. A runner whose packages are
    not installed declares nothing: its options stay unknown; return why, for the error that says so."""
    path = runner_path(args)
    if path is None or "." not in path:
        return None
    module = path.rsplit(".", 1)[0]
    if module in sys.modules:
        return None
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"the runner's module {module} cannot be imported ({exc}), so its options are unknown"
    return None


def _raise(message: str) -> NoReturn:
    raise UsageError(message)


def _beam_error(message: str) -> None:
    """argparse's error, as one line naming the option, instead of Beam's usage text and an exit."""
    if message.startswith("ambiguous option: "):  # what Beam's own parser ignores
        return
    option = message.removeprefix("argument ")
    raise UsageError(f"Beam option {option}" if option != message else f"Beam options: {message}")


def beam_unknown(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the arguments Beam's option classes do not take, every option string Beam knows), with the
    option classes imported so far (`import_runner_options` first). Raises UsageError for a Beam
    option given a value it does not take."""
    from apache_beam.options.pipeline_options import PipelineOptions

    def capture(parser: argparse.ArgumentParser) -> None:
        parser.error = _beam_error  # type: ignore[method-assign,assignment]
        parsers.append(parser)

    parsers: list[argparse.ArgumentParser] = []
    beam_log = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_log.level
    beam_log.setLevel(logging.ERROR)  # its "Discarding unparseable args": we say it better, as an error
    try:
        PipelineOptions(list(args)).get_all_options(add_extra_args_fn=capture)
    finally:
        beam_log.setLevel(level)
    parser = parsers[0]
    _, unknown = parser.parse_known_args(list(args))
    known = [s for action in parser._actions for s in action.option_strings]
    return unknown, known


def secret_flags(args: Sequence[str]) -> list[tuple[str, str]]:
    """(flag, value) of every `--name=value` / `--name value` whose name is a credential's
    (`--s3_secret_access_key`, `--openai_api_key`, `--token`)."""
    from mmcurate.schemas.redact import is_secret_key

    found = []
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        name, eq, value = arg[2:].partition("=")
        if is_secret_key(name):
            nxt = args[i + 1] if i + 1 < len(args) else ""
            found.append((f"--{name}", value if eq else ("" if nxt.startswith("-") else nxt)))
    return found


def check_beam_args(args: Sequence[str], own: Sequence[str], beam: bool = True) -> None:
    """Raise UsageError for the first argument that is neither ours (`own`) nor Beam's.

    `beam`: whether the command runs a pipeline at all (summary, reasons, overlay take no Beam option)."""
    if not args:
        return
    secret = next((flag for flag, _ in secret_flags(args)), None)
    if secret:  # Beam's workers log their options at INFO, whatever our log level: never on the command line
        raise UsageError(
            f"{secret}: credentials are not taken on the command line (Beam's workers log their options); "
            "set them in the environment (AWS_SECRET_ACCESS_KEY, an *_env setting of the config)"
        )
    if "--" in args:
        raise UsageError("mmcurate takes no `--` separator: give Beam options with the others (`--runner=X`)")
    runner_missing = import_runner_options(args) if beam else None
    unknown, known = beam_unknown(args) if beam else (list(args), [])
    for arg in unknown:
        if not arg.startswith("-"):
            raise UsageError(f"unexpected argument {arg!r}")
        name = arg.split("=", 1)[0]
        close = difflib.get_close_matches(name, [*own, *known], n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else f"; {runner_missing}" if runner_missing else ""
        where = "an mmcurate or Beam option" if beam else "an option of this command"
        raise UsageError(f"unrecognized argument {name}: not {where}{hint}")
