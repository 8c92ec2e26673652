"""The unpacked-cache loader of py3langid's model gives exactly what py3langid's own loader gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from py3langid.langid import MODEL_FILE, LanguageIdentifier

from mmcurate.stages import langid_model

TEXTS = [
    "a dog running on the beach at sunset",
    "ein Hund läuft bei Sonnenuntergang am Strand",
    "un chien qui court sur la plage au coucher du soleil",
    "夕阳下在海滩上奔跑的狗",
    "закат над морем",
    "IMG_2034.JPG",
    "12345",
    "ok",
    "",
]


def test_cached_identifier_matches_py3langid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMCURATE_CACHE_DIR", str(tmp_path))
    reference = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    first = langid_model.load_identifier()  # unpacks into the cache
    unpacked = list(tmp_path.glob("py3langid-*"))
    assert len(unpacked) == 1 and sorted(p.name for p in unpacked[0].iterdir()) == sorted(
        f"{n}.npy" for n in langid_model.ARRAYS
    )
    second = langid_model.load_identifier()  # memory-maps the cache
    for text in TEXTS:
        expected = reference.classify(text)
        assert first.classify(text) == expected
        assert second.classify(text) == expected
    assert reference.rank(TEXTS[1])[:10] == second.rank(TEXTS[1])[:10]


def test_unwritable_cache_falls_back_to_py3langid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MMCURATE_CACHE_DIR", str(blocker / "cache"))
    ident = langid_model.load_identifier()
    assert ident.classify(TEXTS[0])[0] == "en"
    assert not (blocker / "cache").exists()


def test_damaged_cache_falls_back_and_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A zero-length array file (a crash mid-write on a file system that lost it) costs nothing."""
    monkeypatch.setenv("MMCURATE_CACHE_DIR", str(tmp_path))
    langid_model.load_identifier()
    (folder,) = tmp_path.glob("py3langid-*")
    (folder / "ptc.npy").write_bytes(b"")
    assert langid_model.load_identifier().classify(TEXTS[0])[0] == "en"  # py3langid's own loader
    assert not folder.exists()
    assert langid_model.load_identifier().classify(TEXTS[2])[0] == "fr"  # unpacked again
    assert (folder / "ptc.npy").stat().st_size > 0
