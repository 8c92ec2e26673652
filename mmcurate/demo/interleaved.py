"""The demo interleaved corpus: documents written around the bundled photographs, one of each trap.

`build_corpus(dest)` writes `docs.jsonl` (MMC4 layout: `text_list`, `image_info`, a
`similarity_matrix` whose best match per image is known, `url`), `obelics.jsonl` (OBELICS layout:
parallel `texts` / `images`, JSON-string metadata) and `images/` (the photographs, as MMC4 ships
them apart from the documents). `EXPECTED` says what the default config does with each document
and each image, so `mmcurate demo --corpus interleaved` doubles as an end-to-end check:

* a document whose images sit at the wrong sentences (the matrix says where they belong),
* a document naming an image the image folder lacks (`image_missing`; the document stays),
* a near duplicate of another document (a few words changed: `duplicate_text`),
* an exact URL duplicate (`duplicate_url`), a document in German (`doc_language`),
* a document whose only image is a thumbnail (`too_small`, then `no_images_left`),
* an image no sentence talks about (`unaligned`),
* an OBELICS row with text and image at one position (`bad_layout`), and a line that is no JSON.

Deterministic: fixed JPEG quality, no timestamps, no randomness.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from .caption import jpeg_bytes, photo

# image name -> skimage file
PHOTOS = {
    "astronaut.jpg": "astronaut.png",
    "rocket.jpg": "rocket.jpg",
    "galaxies.jpg": "hubble_deep_field.jpg",
    "coffee.jpg": "coffee.png",
    "cat.jpg": "chelsea.png",
    "motorcycle.jpg": "motorcycle_left.png",
    "retina.jpg": "retina.jpg",
    "coins.jpg": "coins.png",
    "moon.jpg": "moon.png",
    "camera.jpg": "camera.png",
    "brick.jpg": "brick.png",
    "horse.jpg": "horse.png",
    "tissue.jpg": "ihc.png",
    "grass.jpg": "grass.png",
}
"""Each document has photographs of its own: no image of a kept document repeats one elsewhere."""

MATCH, OTHER, NOTHING = 0.33, 0.19, 0.08
"""Similarities in the supplied matrices: an image with the sentence about it, with another one, with none."""

SPACE = [
    "Eileen Collins trained for years before she became the first woman to pilot the space shuttle.",
    "In her portrait she wears an orange flight suit and holds a white helmet under one arm.",
    "The mission patch on her sleeve names the crew that flew with her in February 1995.",
    "Before dawn the rocket stood on its launch pad between tall lightning towers, lit by floodlights.",
    "Engineers watched the weather closely, because upper-level winds can delay a launch for days.",
]
KITCHEN = [
    "Our Sunday mornings start slowly, with a cup of coffee on a red saucer and a small metal spoon.",
    "The wooden table by the window catches the first light while the kettle cools down.",
    "A ginger tabby cat with green eyes usually sits next to the cup, watching every move we make.",
    "She has long white whiskers and an opinion about everything that happens in the kitchen.",
    "When the radio plays the weather report, she leaves for the sunny spot on the windowsill.",
    "By ten the cup is empty, the saucer is back in the cupboard and the newspaper lies folded.",
]
# KITCHEN with a word changed and its case and punctuation touched: a near duplicate, as syndicated
# web pages are (MinHash compares normalised word 5-grams).
KITCHEN_COPY = [
    "our Sunday mornings begin slowly, with a cup of coffee on a red saucer and a small metal spoon!",
    *KITCHEN[1:],
]
GARAGE = [
    "The red motorcycle came back from the workshop last week with new chrome details on the tank.",
    "Shelves full of cardboard boxes line the walls, and every box holds spare parts for old engines.",
    "The mechanic says the bike will outlast both of us if we change the oil every spring.",
]
EYES = [
    "A fundus photograph shows the back of the eye: the optic disc and the blood vessels branching from it.",
    "Doctors compare such photographs from year to year to catch changes in the retina early.",
    "The exam itself takes a few minutes and does not hurt, though the bright flash can be surprising.",
]
GERMAN = [
    "Die alten griechischen Münzen liegen in vier Reihen auf einem dunklen Hintergrund.",
    "Jede Münze erzählt von einer Stadt, einem Herrscher und einer längst vergangenen Zeit.",
    "Sammler achten besonders auf den Zustand der Prägung und auf die Spuren des Umlaufs.",
]
MOON = [
    "This grayscale close-up of the Moon shows small craters and dark patches of old lava plains.",
    "Amateur astronomers photograph the terminator line, where shadows make the relief stand out.",
    "A small telescope and a steady mount are enough to capture this much detail on a clear night.",
]
CAMERA = [
    "The photographer in the dark coat waited for the light to change over the grassy field.",
    "His camera stood on a wooden tripod while buildings faded into the haze in the distance.",
    "Old film cameras like this one needed patience, because every frame cost money to develop.",
]

KEPT = ("kept", "")


def _info(name: str, anchor: int, sim: float) -> dict[str, Any]:
    return {"face_detections": None, "image_name": name, "matched_sim": sim, "matched_text_index": anchor,
            "raw_url": f"https://example.org/img/{name}"}  # fmt: skip


def _matrix(truth: list[int | None], sentences: int) -> list[list[float]]:
    """Images x sentences: MATCH at each image's true sentence, OTHER elsewhere; None = no sentence fits."""
    return [[NOTHING if t is None else (MATCH if j == t else OTHER) for j in range(sentences)] for t in truth]


def _mmc4(url: str, texts: list[str], images: list[tuple[str, int, int | None]]) -> dict[str, Any]:
    """`images`: (name, the anchor the input claims, the sentence the matrix says fits best)."""
    matrix = _matrix([truth for _, _, truth in images], len(texts))
    info = [_info(name, given, matrix[i][given]) for i, (name, given, _) in enumerate(images)]
    return {"image_info": info, "similarity_matrix": matrix, "text_list": texts, "url": url,
            "could_have_url_duplicate": 0}  # fmt: skip


DOCUMENTS: list[tuple[str, dict[str, Any]]] = [
    # misplaced: the astronaut is claimed at the rocket's sentence and the rocket at the first one
    ("space", _mmc4("https://example.org/space/collins", SPACE, [("astronaut.jpg", 3, 1), ("rocket.jpg", 0, 3)])),
    ("kitchen", _mmc4("https://example.org/home/sunday", KITCHEN, [("coffee.jpg", 0, 0), ("cat.jpg", 2, 2)])),
    (
        "kitchen_copy",
        _mmc4("https://blog.example.net/sunday", KITCHEN_COPY, [("horse.jpg", 0, 0), ("tissue.jpg", 2, 2)]),
    ),
    # the same URL as `space` (scheme and host case, a fragment and a trailing slash differ)
    ("space_again", _mmc4("HTTPS://Example.org/space/collins/#gallery", MOON, [("grass.jpg", 0, 0)])),
    ("garage", _mmc4("https://example.org/garage", GARAGE, [("motorcycle.jpg", 0, 0), ("lost_photo.jpg", 2, 2)])),
    ("german", _mmc4("https://example.de/muenzen", GERMAN, [("coins.jpg", 0, 0)])),
    ("eyes", _mmc4("https://example.org/health/eyes", EYES, [("retina_thumb.jpg", 0, 0)])),
    # the brick wall belongs to no sentence of a page about a photographer
    ("camera", _mmc4("https://example.org/photography", CAMERA, [("camera.jpg", 1, 0), ("brick.jpg", 2, None)])),
]

OBELICS_GOOD = {
    "texts": [MOON[0] + " " + MOON[1], None, MOON[2], None],
    "images": [None, "moon.jpg", None, "galaxies.jpg"],  # paths under read.image_root
    "metadata": json.dumps([None, {"src": "https://example.org/moon.jpg"}, None, {"src": "https://example.org/g.jpg"}]),
    "general_metadata": json.dumps({"url": "https://example.org/night-sky", "warc_filename": "demo.warc.gz"}),
}
OBELICS_BAD = {  # position 1 holds both a text and an image
    "texts": [CAMERA[0], CAMERA[1]],
    "images": [None, "camera.jpg"],
    "metadata": json.dumps([None, None]),
    "general_metadata": json.dumps({"url": "https://example.org/broken"}),
}

# (input line) -> document (status, reason); images by (line, slot) -> (status, reason, final anchor or None)
EXPECTED_DOCUMENTS: dict[str, tuple[str, str]] = {
    "space": KEPT,
    "kitchen": KEPT,
    "kitchen_copy": ("dropped", "duplicate_text"),
    "space_again": ("dropped", "duplicate_url"),
    "garage": KEPT,
    "german": ("dropped", "doc_language"),
    "eyes": ("dropped", "no_images_left"),
    "camera": KEPT,
    "not_json": ("quarantined", "bad_json"),
    "night_sky": KEPT,
    "both_at_one_position": ("quarantined", "bad_layout"),
}
EXPECTED_IMAGES: dict[tuple[str, int], tuple[str, str, int | None]] = {
    ("space", 0): ("kept", "", 1),  # re-anchored from 3 to 1
    ("space", 1): ("kept", "", 3),  # re-anchored from 0 to 3
    ("kitchen", 0): ("kept", "", 0),
    ("kitchen", 1): ("kept", "", 2),
    ("kitchen_copy", 0): ("dropped", "duplicate_document", None),
    ("kitchen_copy", 1): ("dropped", "duplicate_document", None),
    ("space_again", 0): ("dropped", "duplicate_document", None),
    ("garage", 0): ("kept", "", 0),
    ("garage", 1): ("dropped", "image_missing", None),
    ("german", 0): ("dropped", "document_dropped", None),
    ("eyes", 0): ("dropped", "too_small", None),
    ("camera", 0): ("kept", "", 0),
    ("camera", 1): ("dropped", "unaligned", None),
    ("night_sky", 0): ("kept", "", None),
    ("night_sky", 1): ("kept", "", None),
}


def _write_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in PHOTOS.items():
        img = photo(source)
        img.thumbnail((640, 640), Image.Resampling.LANCZOS)
        (folder / name).write_bytes(jpeg_bytes(img.convert("RGB")))
    thumb = photo("retina.jpg").resize((60, 60), Image.Resampling.LANCZOS)
    (folder / "retina_thumb.jpg").write_bytes(jpeg_bytes(thumb))


def build_corpus(dest: str | Path) -> Path:
    """Write the demo documents and images under `dest`; returns the folder to give as --input."""
    dest = Path(dest)
    docs = dest / "documents"
    docs.mkdir(parents=True, exist_ok=True)
    _write_images(dest / "images")
    lines = [json.dumps(row, ensure_ascii=False) for _, row in DOCUMENTS]
    lines.insert(len(lines) - 1, '{"text_list": ["a line cut off in the middle')  # not JSON
    (docs / "docs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    obelics = [json.dumps(OBELICS_GOOD, ensure_ascii=False), json.dumps(OBELICS_BAD, ensure_ascii=False)]
    (docs / "obelics.jsonl").write_text("\n".join(obelics) + "\n", encoding="utf-8")
    return docs


def line_names() -> dict[tuple[str, int], str]:
    """(input file name, line number from 1) -> the document's name in EXPECTED_DOCUMENTS."""
    names = [name for name, _ in DOCUMENTS]
    names.insert(len(names) - 1, "not_json")
    out = {("docs.jsonl", i + 1): n for i, n in enumerate(names)}
    out[("obelics.jsonl", 1)] = "night_sky"
    out[("obelics.jsonl", 2)] = "both_at_one_position"
    return out


def demo_config(image_root: str) -> tuple[Any, list[str]]:
    """The embedded defaults with `read.image_root` set; the alignment uses the documents' own
    matrices when CLIP's weights are not on this machine (the note says so)."""
    from mmcurate.pipelines.interleaved import CORPUS
    from mmcurate.pipelines.models import validate_models
    from mmcurate.stages.base import ModelUnavailable

    config = CORPUS.load_config(None)
    config = config.model_copy(update={"read": config.read.model_copy(update={"image_root": image_root})})
    filters, notes = dict(config.filters), []
    try:
        validate_models(config)
    except ModelUnavailable as exc:
        filters["alignment"] = {**(filters.get("alignment") or {}), "source": "input"}
        notes.append(f"the alignment uses the documents' own similarity matrices (source: input): {exc}")
    return CORPUS.load_config(None, {**config.model_dump(), "filters": filters}), notes
