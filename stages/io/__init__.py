"""Reading inputs: units (units.py), container loops (containers.py), safe file reads (paths.py) and
the guarded loop that applies a corpus's adapter to every item (reader.py)."""

from .containers import Item, ReadReport, iter_unit
from .paths import ReadRefused, check_regular, is_local, read_bytes, resolve_inside
from .reader import Adapter, BadRow, ReadBase, read_unit
from .units import (
    TAR_EXTS,
    InputError,
    Scan,
    Unit,
    attach_ignored,
    clean_text,
    expand_uri,
    hidden,
    jsonl_units,
    scan_inputs,
    stable_error,
    unstrip,
    utf8,
)

__all__ = [
    "TAR_EXTS",
    "Adapter",
    "BadRow",
    "InputError",
    "Item",
    "ReadBase",
    "ReadRefused",
    "ReadReport",
    "Scan",
    "Unit",
    "attach_ignored",
    "check_regular",
    "clean_text",
    "expand_uri",
    "hidden",
    "is_local",
    "iter_unit",
    "jsonl_units",
    "read_bytes",
    "read_unit",
    "resolve_inside",
    "scan_inputs",
    "stable_error",
    "unstrip",
    "utf8",
]
