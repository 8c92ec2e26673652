"""The command line's strictness: what is not ours must be an option Beam knows.

Beam's own parsing drops what it does not know with a warning ("Discarding unparseable args"), so
a misspelled `--overwirte` used to run to success. Here every argument our sub-command does not
take is parsed with Beam's option classes; what is left is an error that names the closest option
of either set. Beam's import-time warnings (a missing GCP client library on a machine that does
not use GCP) are silenced before Beam is imported.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence

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


def beam_unknown(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the arguments Beam's option classes do not take, every option string Beam knows)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    parsers: list = []
    beam_log = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_log.level
    beam_log.setLevel(logging.ERROR)  # its "Discarding unparseable args": we say it better, as an error
    try:
        PipelineOptions(list(args)).get_all_options(add_extra_args_fn=parsers.append)
    finally:
        beam_log.setLevel(level)
    parser = parsers[0]
    _, unknown = parser.parse_known_args(list(args))
    known = [s for action in parser._actions for s in action.option_strings]
    return unknown, known


def check_beam_args(args: Sequence[str], own: Sequence[str], beam: bool = True) -> None:
    """Raise UsageError for the first argument that is neither ours (`own`) nor Beam's.

    `beam`: whether the command runs a pipeline at all (summary, reasons, overlay take no Beam option)."""
    if not args:
        return
    unknown, known = beam_unknown(args) if beam else (list(args), [])
    for arg in unknown:
        if arg == "--":
            continue
        if not arg.startswith("-"):
            raise UsageError(f"unexpected argument {arg!r}")
        name = arg.split("=", 1)[0]
        close = difflib.get_close_matches(name, [*own, *known], n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else ""
        where = "an mmcurate or Beam option" if beam else "an option of this command"
        raise UsageError(f"unrecognized argument {name}: not {where}{hint}")
