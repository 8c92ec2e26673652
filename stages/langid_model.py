"""py3langid's bundled model, loaded in ~0.1 s instead of ~0.8 s.

The wheel ships the model as an LZMA-compressed npz (4.5 MB -> 68 MB); decompressing it costs every
worker process 0.8 s of start-up. The first load unpacks its arrays once into a cache folder
(`$MMCURATE_CACHE_DIR`, else `$XDG_CACHE_HOME/mmcurate`, else `~/.cache/mmcurate`) named by the
model file's hash, as plain `.npy` files that later loads memory-map (so two workers on one machine
share the page cache). The identifier is built with py3langid's public constructor from the same
arrays its own loader reads; any problem with the cache falls back to py3langid's loader.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import shutil
import tempfile
from array import array
from pathlib import Path
from typing import Any

import numpy as np

ARRAYS = ("ptc", "pc", "classes", "nextmove", "nextmove_row", "out_feat")
_TYPECODE = {2: "H", 4: "I", 8: "L"}


def cache_root() -> Path:
    explicit = os.environ.get("MMCURATE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmcurate"


def _model_path() -> Path:
    from py3langid.langid import MODEL_DIR, MODEL_FILE

    path = Path(MODEL_FILE)
    return path if path.is_absolute() else Path(MODEL_DIR) / path


def _unpack(model: Path, folder: Path) -> None:
    """The model's arrays as .npy files in `folder`, written whole or not at all."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        with lzma.open(model) as src, np.load(io.BytesIO(src.read()), allow_pickle=False) as data:
            for name in ARRAYS:
                with open(tmp / f"{name}.npy", "wb") as f:
                    np.save(f, data[name], allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())  # whole files before the rename: a crash leaves none half-written
        os.replace(tmp, folder)
    except OSError:
        if folder.exists():  # another worker got there first
            shutil.rmtree(tmp, ignore_errors=True)
            return
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _as_array(values: np.ndarray) -> array:
    """An unsigned numpy array as the stdlib array py3langid's tokenizer walks."""
    out = array(_TYPECODE[values.dtype.itemsize])
    out.frombytes(memoryview(np.ascontiguousarray(values)).cast("B"))
    return out


def _cache_folder(model: Path) -> Path:
    return cache_root() / f"py3langid-{hashlib.sha256(model.read_bytes()).hexdigest()[:16]}"


def _cached_arrays(folder: Path, model: Path) -> dict[str, np.ndarray]:
    if not folder.is_dir():
        _unpack(model, folder)
    return {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in ARRAYS}


def _identifier(a: dict[str, np.ndarray]) -> Any:
    from py3langid.langid import LanguageIdentifier

    return LanguageIdentifier(
        np.asarray(a["ptc"]),
        np.asarray(a["pc"]),
        a["classes"].tolist(),
        _as_array(a["nextmove"]),
        a["out_feat"].tolist(),
        norm_probs=True,
        tk_row=_as_array(a["nextmove_row"]),
    )


def load_identifier() -> Any:
    """py3langid's LanguageIdentifier over its bundled model, with normalised probabilities. Any
    problem with the cache (unwritable, damaged, no home folder) falls back to py3langid's loader;
    only a cache that cannot be read is deleted (to be unpacked again next time)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    folder = None
    try:
        model = _model_path()
        folder = _cache_folder(model)
        arrays = _cached_arrays(folder, model)
    except Exception:  # a damaged or unwritable cache must never cost a record
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    try:
        return _identifier(arrays)
    except Exception:  # py3langid changed its constructor: its own loader still works
        return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
