"""interleaved: the interleaved corpus path (`pipelines.interleaved.CORPUS`: MMC4 jsonl read with an image
folder root -> decode + pixel hash + pHash + image filters per slot -> the document text filters
(length, OBELICS repetition, Gopher repetition, boilerplate, non-alphabetic, language, image count,
vision tokens) -> MinHash signature -> alignment from the input's similarity matrix -> split into
records -> run-wide image dedup and MinHash LSH text dedup -> re-encode -> webdataset shards + ledgers)
next to the caption path (`pipelines.caption.CORPUS`, the same folder of the same JPEGs read with
their sidecar .txt captions), both full pipelines on the same DirectRunner settings in the same run:
  (cap)  the caption pipeline, 1 worker (in-memory), embedded defaults less the model filters,
  (int)  the interleaved pipeline, 1 worker, embedded defaults with `alignment: {source: input}`,
  (cap2) / (int2)  the same on N worker processes (`--workers`, caption's scaling option),
  (steps) informational: a bare loop over the first unit's documents timing each step of the
         interleaved path (read, decode + hashes, image filters, text filters, MinHash, encode).
Corpus: `--docs` generated MMC4 documents (default 2,000) of 3 images each (0.5 MP crops of the
scikit-image photographs, as the caption corpus) and 150-400 words of generated English prose.
Target: interleaved seconds per image <= 1.3x caption seconds per image (1 worker, same run), both
runs' accounting holds, most images kept. Figures are wall-clock: measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    OUT_DIR,
    SOURCES,
    VERDICT,
    Timing,
    best_of,
    cached_corpus,
    cell,
    created,
    environment,
    in_parallel,
    photo_sources,
    print_errors,
    print_load,
    profile_to,
    runner_args,
    short_error,
    synth_image,
    table_head,
    timed,
    worker_logs,
    write_report,
)
from PIL import Image

from mmcurate.pipelines import caption as caption_pipeline
from mmcurate.pipelines import interleaved as interleaved_pipeline
from mmcurate.pipelines.run import execute

CORPUS_VERSION = 1  # bump when the generator changes, so cached corpora are rebuilt
IMAGES_PER_DOC = 3
IMAGES_PER_UNIT = 1000
"""Both corpora are read in units of about this many images (caption's folder_unit_size default)."""
SIZE = (866, 577)  # the caption corpus' 0.5 MP
TARGET_RATIO = 1.3
MIN_KEPT = 0.8
"""The share of images (and documents) a run must keep for its figures to mean the path ran: the crops
of 15 photographs hold ~12% pHash near duplicates (within distance 4), which both paths drop alike."""

# ---------------------------------------------------------------------------------------------------
# Prose: sentences about each image's subject, from templates and word pools, seeded per document.
# A document uses each template once, so its text does not repeat itself (the repetition filters).
# ---------------------------------------------------------------------------------------------------

TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # source -> (noun phrases, words of its field)
    "astronaut.png": (("the astronaut", "the spacewalker", "our crew member", "the mission specialist"),
                      ("orbit", "spacesuit", "launch", "mission", "flag", "helmet", "shuttle")),
    "coffee.png": (("the coffee", "this espresso", "the little cup", "the morning brew"),
                   ("saucer", "roast", "barista", "crema", "beans", "aroma", "cafe")),
    "chelsea.png": (("the cat", "our tabby", "this ginger kitten", "the furry housemate"),
                    ("whiskers", "paws", "fur", "nap", "windowsill", "vet", "purring")),
    "rocket.jpg": (("the rocket", "this launch vehicle", "the booster", "the tall spacecraft"),
                   ("countdown", "engines", "gantry", "fuel", "payload", "exhaust", "pad")),
    "hubble_deep_field.jpg": (("the galaxy field", "these distant galaxies", "the deep field", "this patch of sky"),
                              ("telescope", "light", "universe", "exposure", "stars", "redshift", "cosmos")),
    "ihc.png": (("the tissue sample", "this stained section", "the biopsy slide", "the specimen"),
                ("stain", "antibody", "pathologist", "nuclei", "microscope", "laboratory", "protein")),
    "retina.jpg": (("the retina", "this fundus image", "the back of the eye", "the optic disc"),
                   ("vessels", "ophthalmologist", "lens", "scan", "vision", "clinic", "diagnosis")),
    "motorcycle_left.png": (("the motorcycle", "this old bike", "the touring machine", "the parked motorbike"),
                            ("engine", "chrome", "garage", "tyres", "rider", "exhaust", "saddle")),
    "camera.png": (("the photographer", "the man with the camera", "our cameraman", "the figure by the tripod"),
                   ("lens", "shutter", "tripod", "film", "portrait", "studio", "exposure")),
    "moon.png": (("the moon", "the lunar surface", "this crater field", "our nearest neighbour in space"),
                 ("craters", "dust", "orbit", "tides", "phases", "maria", "telescope")),
    "brick.png": (("the brick wall", "this old masonry", "the weathered facade", "the red bricks"),
                  ("mortar", "builder", "texture", "ivy", "factory", "courtyard", "restoration")),
    "grass.png": (("the grass", "this lawn", "the meadow", "the green blades"),
                  ("garden", "dew", "mowing", "seeds", "soil", "summer", "park")),
    "gravel.png": (("the gravel", "this stony path", "the loose pebbles", "the driveway"),
                   ("stones", "footsteps", "drainage", "quarry", "walkway", "rain", "boots")),
    "coins.png": (("the coins", "this handful of change", "the old currency", "the silver pieces"),
                  ("collector", "mint", "metal", "auction", "history", "value", "museum")),
    "cell.png": (("the cell", "this microscope view", "the living cell", "the membrane"),
                 ("biology", "nucleus", "division", "culture", "sample", "experiment", "students")),
}  # fmt: skip
ADJECTIVES = (
    "quiet", "remarkable", "familiar", "striking", "gentle", "unusual", "faded", "vivid", "curious", "ordinary",
    "patient", "humble", "careful", "surprising", "honest", "warm", "distant", "lively", "simple", "peculiar",
)  # fmt: skip
PEOPLE = (
    "my neighbour", "a friend from school", "our guide", "the visitors", "my grandmother", "a local teacher",
    "two students", "the shop owner", "a retired engineer", "my younger brother", "the volunteers", "a reporter",
)  # fmt: skip
TIMES = (
    "last spring", "early one morning", "after lunch", "during the holidays", "on a rainy afternoon", "years ago",
    "this weekend", "late in the evening", "at the end of the summer", "before the storm", "on our first visit",
)  # fmt: skip
PLACES = (
    "near the harbour", "in the old town", "at the museum", "behind the library", "in a small village",
    "along the river", "at the university", "in the back garden", "close to the station", "on the hill",
)  # fmt: skip
VERBS = (
    "noticed", "photographed", "described", "remembered", "studied", "admired", "sketched", "measured", "showed me",
    "talked about", "pointed at", "wrote about",
)  # fmt: skip
ADVERBS = ("slowly", "quietly", "almost", "really", "nearly", "certainly", "probably", "clearly", "rarely", "often")
TEMPLATES = (
    "{Time}, {person} {verb} {noun} {place}.",
    "I still think {noun} looks {adj} in this picture, even though the {word} is {adv} hidden.",
    "Nobody expected {noun} to draw such a crowd, but {person} stayed for an hour asking about the {word}.",
    "The photo above shows {noun}, and if you look closely you can see the {word} on the left.",
    "What struck me most was how {adj} {noun} seemed once the light changed.",
    "According to {person}, the {word} matters more than most people realise.",
    "We spent a long time {place} talking about the {word} and why it changed over the years.",
    "It is easy to overlook {noun}, yet every {word} tells a small story of its own.",
    "{Person} told us that the {word} was repaired {time}, which explains the {adj} colour.",
    "If you ever get the chance, go and see {noun} for yourself; pictures never quite capture the {word}.",
    "There is something {adj} about the way {noun} sits in the frame.",
    "A second look reveals the {word}, which {person} had {adv} missed at first.",
    "In the end we agreed that {noun} deserved a page of its own in the album.",
    "The caption in the archive simply says that {noun} was recorded {place} {time}.",
    "Some readers asked how the {word} was made, so here is a short explanation.",
    "Experts disagree about the {word}, but most accept that {noun} is older than it looks.",
    "Honestly, I had never paid attention to the {word} until {person} mentioned it.",
    "The next picture was taken a few minutes later, from a slightly different angle.",
    "You can compare it with the earlier photo to see how much the {word} changed.",
    "Many families {place} keep a similar picture of {noun} on the kitchen wall.",
    "When the weather turned, {person} {verb} the {word} and went home {adv} satisfied.",
    "The {adj} details are what make {noun} worth a closer look.",
    "It took three attempts to get the exposure right, mostly because of the {word}.",
    "Several people wrote in to say that their own {word} looked exactly like this.",
    "{Noun} appears again later in the article, next to a map of the area.",
    "This image was shared by {person}, who kindly allowed us to print it.",
    "Looking back, that afternoon {place} was one of the most {adj} days of the trip.",
    "A short video of {noun} is linked at the end of this post for anyone curious.",
    "The {word} is {adv} the first thing children point out when they see it.",
    "We returned {time} and found that {noun} had barely changed.",
)
OPENINGS = (
    "This week I want to share a few pictures from a trip that surprised me.",
    "Here is a short photo essay put together by our readers over the past month.",
    "A few people asked for the full story behind these photographs, so here it is.",
    "The following notes accompany a small exhibition that opened in our town recently.",
    "I finally sorted through the folder of pictures from last year and picked three favourites.",
    "Our local history group met again, and this time everybody brought a photograph.",
)
CLOSINGS = (
    "Thanks for reading, and feel free to send us your own pictures.",
    "More photographs from the same series will follow in the next issue.",
    "If you know more about any of these images, please leave a comment below.",
    "That is all for now; the full gallery is available in the archive.",
    "We hope these pictures bring back a few memories of your own.",
)


def _source_index(i: int, seed: int) -> int:
    """Which photograph `common.synth_image(i, seed, ...)` crops: its first draw."""
    return int(np.random.default_rng([seed, i]).integers(len(SOURCES)))


def _fill(template: str, rng: np.random.Generator, source: str) -> str:
    nouns, words = TOPICS[source]

    def pick(pool: tuple[str, ...]) -> str:
        return pool[int(rng.integers(len(pool)))]

    values = {
        "noun": pick(nouns), "word": pick(words), "adj": pick(ADJECTIVES), "person": pick(PEOPLE),
        "time": pick(TIMES), "place": pick(PLACES), "verb": pick(VERBS), "adv": pick(ADVERBS),
    }  # fmt: skip
    values.update({k.capitalize(): v[:1].upper() + v[1:] for k, v in list(values.items())})
    return template.format(**values)


def document(d: int, seed: int) -> tuple[list[str], list[tuple[int, list[int]]]]:
    """Document `d`'s sentences and, per image (its global index), the sentences written about it."""
    rng = np.random.default_rng([seed, 1_000_003, d])
    order = list(rng.permutation(len(TEMPLATES)))
    texts = [OPENINGS[int(rng.integers(len(OPENINGS)))]]
    images: list[tuple[int, list[int]]] = []
    for j in range(IMAGES_PER_DOC):
        i = d * IMAGES_PER_DOC + j
        source = SOURCES[_source_index(i, seed)]
        mine = []
        for _ in range(int(rng.integers(3, 7))):
            if not order:
                break
            mine.append(len(texts))
            texts.append(_fill(TEMPLATES[order.pop()], rng, source))
        images.append((i, mine))
    texts.append(CLOSINGS[int(rng.integers(len(CLOSINGS)))])
    return texts, images


def mmc4_row(d: int, seed: int) -> dict[str, Any]:
    """One MMC4 document: sentences, image_info (anchored at the first sentence about each image) and an
    images x sentences similarity matrix (an image's own sentences score higher, as CLIP's would)."""
    texts, images = document(d, seed)
    rng = np.random.default_rng([seed, 2_000_003, d])
    matrix = rng.uniform(0.05, 0.18, size=(len(images), len(texts)))
    info = []
    for row, (i, mine) in enumerate(images):
        matrix[row, mine] = rng.uniform(0.22, 0.34, size=len(mine))
        best = max(mine, key=lambda s: matrix[row, s])
        info.append({
            "image_name": f"{i:09d}.jpg", "raw_url": f"https://example.invalid/img/{seed}/{i:07d}.jpg",
            "matched_text_index": int(best), "matched_sim": round(float(matrix[row, best]), 6), "face_detections": None,
        })  # fmt: skip
    return {
        "url": f"https://example.invalid/doc/{seed}/{d:07d}.html",
        "text_list": texts,
        "image_info": info,
        "similarity_matrix": [[round(float(v), 6) for v in r] for r in matrix],
        "could_have_url_duplicate": 0,
    }


# ---------------------------------------------------------------------------------------------------
# Corpus: one folder of JPEGs with sidecar captions (the caption corpus, and the MMC4 image root) and
# MMC4 jsonl files of documents naming them.
# ---------------------------------------------------------------------------------------------------


def _write_chunk(root: str, first: int, stop: int, seed: int) -> int:
    """Documents [first, stop): their images (+ .txt caption) into images/, their rows into one jsonl."""
    sources, total = photo_sources(), 0
    images = Path(root, "images")
    with Path(root, "docs", f"docs-{first:07d}.jsonl").open("w") as f:
        for d in range(first, stop):
            for i in range(d * IMAGES_PER_DOC, (d + 1) * IMAGES_PER_DOC):
                jpg, caption, _meta = synth_image(i, seed, SIZE, sources)
                (images / f"{i:09d}.jpg").write_bytes(jpg)
                (images / f"{i:09d}.txt").write_text(caption)
                total += len(jpg)
            f.write(json.dumps(mmc4_row(d, seed)) + "\n")
    return total


def docs_per_unit() -> int:
    return math.ceil(IMAGES_PER_UNIT / IMAGES_PER_DOC)


def interleaved_corpus(docs: int, seed: int = 0) -> Path:
    """The cached corpus folder for these parameters (images/, docs/), generated in parallel on first use."""
    root = OUT_DIR / "corpus" / f"interleaved-v{CORPUS_VERSION}-d{docs}x{IMAGES_PER_DOC}-{SIZE[0]}x{SIZE[1]}-seed{seed}"

    def make(tmp: Path) -> dict[str, Any]:
        (tmp / "images").mkdir()
        (tmp / "docs").mkdir()
        per = docs_per_unit()
        bounds = [(s, min(s + per, docs)) for s in range(0, docs, per)]
        n = len(bounds)
        sizes = in_parallel(_write_chunk, [str(tmp)] * n, [a for a, _ in bounds], [b for _, b in bounds], [seed] * n)
        words = [sum(len(t.split()) for t in document(d, seed)[0]) for d in range(docs)]
        return {
            "documents": docs, "images": docs * IMAGES_PER_DOC, "jsonl_files": n, "size": list(SIZE), "seed": seed,
            "jpeg_bytes": sum(sizes), "words_per_document": [min(words), round(sum(words) / docs, 1), max(words)],
        }  # fmt: skip

    return cached_corpus(root, f"{docs} documents x {IMAGES_PER_DOC} JPEGs", make)


# ---------------------------------------------------------------------------------------------------
# What both sides run
# ---------------------------------------------------------------------------------------------------


def _offline(filters: dict[str, Any], config: Any) -> dict[str, Any]:
    """`filters` less those that need model weights (what `mmcurate/demo/caption.py:demo_config` leaves out
    when the weights are missing; here always, so the figures do not depend on what the cache holds)."""
    model = {f.name for f in config.build_filters() if f.model}
    return {name: params for name, params in filters.items() if name not in model}


def caption_config() -> Any:
    """The caption defaults less the model filters, read in folder units of IMAGES_PER_UNIT images."""
    config = caption_pipeline.CORPUS.load_config(None)
    read = config.read.model_copy(update={"folder_unit_size": docs_per_unit() * IMAGES_PER_DOC})
    return config.model_copy(update={"filters": _offline(dict(config.filters), config), "read": read})


def interleaved_config(root: Path) -> Any:
    """The interleaved defaults with the alignment taken from the input's matrix (CLIP cannot run offline),
    the image folder as MMC4's image root, in jsonl units of IMAGES_PER_UNIT images; text filters and
    MinHash text dedup stay on (the target includes them)."""
    config = interleaved_pipeline.CORPUS.load_config(None)
    filters = dict(config.filters)
    filters["alignment"] = {**filters.get("alignment", {}), "source": "input"}
    config = config.model_copy(update={"filters": filters})
    filters = _offline(filters, config)
    read = config.read.model_copy(
        update={"layout": "mmc4", "image_root": str(root / "images"), "jsonl_unit_lines": docs_per_unit()}
    )
    # like for like: the images are stored as the caption path stores them (its max_side, format, quality),
    # so the ratio prices the document's own work, not a cheaper encode
    cap_out = caption_config().output
    same = {k: getattr(cap_out, k) for k in ("max_side", "format", "quality", "resample")}
    output = {**config.output.model_dump(), **same}
    if "vision_tokens" in filters:
        filters["vision_tokens"] = {**(filters["vision_tokens"] or {}), "output_max_side": same["max_side"]}
    return type(config)(**{**config.model_dump(), "filters": filters, "read": read.model_dump(), "output": output})


@dataclasses.dataclass
class Setup:
    corpus: Path
    docs: int
    images: int
    cap_config: Any
    int_config: Any
    cap_inputs: list[str]
    int_inputs: list[str]
    cap_units: list[Any]
    int_units: list[Any]
    cores: int
    workers: int
    """Worker processes of the scaling lines; 0 or 1: none."""


def _setup(args: argparse.Namespace) -> Setup:
    root = interleaved_corpus(args.docs, args.seed)
    cap_config, int_config = caption_config(), interleaved_config(root)
    cap_inputs, int_inputs = [str(root / "images")], [str(root / "docs" / "*.jsonl")]
    cap_units = caption_pipeline.CORPUS.list_units(cap_inputs, cap_config)
    int_units = interleaved_pipeline.CORPUS.list_units(int_inputs, int_config)
    cores = os.cpu_count() or 1
    workers = min(getattr(args, "workers", 0) or 0, cores)
    images = args.docs * IMAGES_PER_DOC
    return Setup(root, args.docs, images, cap_config, int_config, cap_inputs, int_inputs, cap_units, int_units,
                 cores, workers if workers > 1 else 0)  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    """What one run's manifest says: per kind (input, kept, dropped, quarantined), reasons, accounting."""

    counts: dict[str, dict[str, int]]
    reasons: dict[str, dict[str, int]]
    accounting_ok: bool
    kept_images: int


def _reasons(section: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for status in ("dropped", "quarantined"):
        for reason, n in (section.get("reasons", {}).get(status) or {}).items():
            out[reason] = out.get(reason, 0) + n
    return out


def full_run(corpus: Any, config: Any, inputs: list[str], units: list[Any], workers: int) -> Outcome:
    """One whole pipeline (read to manifest) into a fresh folder, as `mmcurate caption|interleaved` runs it."""
    with tempfile.TemporaryDirectory(prefix="mmcurate-bench-") as out, worker_logs(workers):
        manifest = execute(corpus, config, inputs, units, out, runner_args(workers), progress=False)
    kinds = manifest["kinds"]
    counts = {kind: dict(sec["counts"]) for kind, sec in kinds.items()}
    reasons = {kind: _reasons(sec) for kind, sec in kinds.items()}
    kept = int(manifest.get("extras", {}).get("kept_images", counts.get("caption", {}).get("kept", 0)))
    return Outcome(counts, reasons, bool(manifest["accounting_ok"]), kept)


Variants = dict[str, tuple[str, str, int, Callable[[], Outcome]]]
"""key -> (label, path, cores used, the run)."""


def _variants(s: Setup) -> Variants:
    cap, inter = caption_pipeline.CORPUS, interleaved_pipeline.CORPUS

    def line(path: str, workers: int) -> Callable[[], Outcome]:
        if path == "caption":
            return lambda: full_run(cap, s.cap_config, s.cap_inputs, s.cap_units, workers)
        return lambda: full_run(inter, s.int_config, s.int_inputs, s.int_units, workers)

    variants: Variants = {
        "cap": ("(cap) caption pipeline, 1 worker", "caption", 1, line("caption", 1)),
        "int": ("(int) interleaved pipeline, 1 worker", "interleaved", 1, line("interleaved", 1)),
    }
    if s.workers:
        w = s.workers
        variants["cap2"] = (f"(cap2) caption, multi_processing, {w} workers", "caption", w, line("caption", w))
        variants["int2"] = (f"(int2) interleaved, multi_processing, {w} workers", "interleaved", w,
                            line("interleaved", w))  # fmt: skip
    return variants


def _one_run(fn: Callable[[], Outcome]) -> tuple[Timing, Outcome] | str:
    """The run's timing and manifest, or why it does not count (it raised, or its accounting failed)."""
    try:
        timing, outcome = timed(fn)
    except Exception as exc:  # report it, keep measuring the other lines
        return short_error(exc)
    if not outcome.accounting_ok:
        return f"accounting failed: {outcome.counts}"
    return timing, outcome


def _measure(variants: Variants, reps: int) -> tuple[dict[str, list[Timing]], dict[str, Outcome], dict[str, list[str]]]:
    """`reps` interleaved repetitions of every line, so drifting load hits both paths alike."""
    runs: dict[str, list[Timing]] = {k: [] for k in variants}
    errors: dict[str, list[str]] = {k: [] for k in variants}
    outcomes: dict[str, Outcome] = {}
    for rep in range(reps):
        for key, (_label, _path, _cores, fn) in variants.items():
            got = _one_run(fn)
            if isinstance(got, str):
                errors[key].append(got)
                print(f"  rep {rep + 1}/{reps} {key:5s} FAILED: {got[:200]}", flush=True)
                continue
            runs[key].append(got[0])
            outcomes[key] = got[1]
            print(f"  rep {rep + 1}/{reps} {key:5s} {got[0].wall:7.2f}s wall", flush=True)
    return runs, outcomes, errors


# ---------------------------------------------------------------------------------------------------
# (steps): where a document's time goes, step by step, in a bare loop over the first unit
# ---------------------------------------------------------------------------------------------------


class Clock:
    """Seconds spent per named step."""

    def __init__(self) -> None:
        self.spent: Counter[str] = Counter()

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        self.spent[name] += time.perf_counter() - t0
        return out


def _image_steps(clock: Clock, rec: Any, decode_params: Any, filters: list[Any], prefix: str) -> Any:
    """Decode, hashes and image filter scores of one image record (a slot or a caption sample)."""
    from mmcurate.stages.image_decode import decode, perceptual_hash, pixel_hash

    img = clock(f"{prefix}decode", lambda: decode(rec.image or b"", decode_params))
    rec.pixel_hash = clock(f"{prefix}pixel_hash", lambda: pixel_hash(img.image))
    rec.phash = clock(f"{prefix}phash", lambda: perceptual_hash(img.image))
    rec.width, rec.height, rec.pixels = img.width, img.height, img.image
    for f in filters:
        rec.scores.update(clock(f"{prefix}filter {f.name}", lambda f=f: f.score(rec))[0])
    return img.image


def interleaved_steps(s: Setup, limit: int | None = None) -> dict[str, float]:
    """Milliseconds per document of each step of the interleaved path on the first unit (its first `limit`
    documents: the warm-up)."""
    from mmcurate.stages.alignment import assign
    from mmcurate.stages.doc_filters import document_text
    from mmcurate.stages.image_decode import encode
    from mmcurate.stages.interleaved_io import read_interleaved_unit
    from mmcurate.stages.minhash import signature

    config, clock = s.int_config, Clock()
    filters = [f for f in config.build_filters() if not f.model]
    image_filters = [f for f in filters if "image" in f.kinds and f.name != "alignment"]
    doc_filters = [f for f in filters if "document" in f.kinds]
    docs = clock(
        "read (jsonl + image files)", lambda: list(islice(read_interleaved_unit(s.int_units[0], config.read), limit))
    )
    for doc in docs:
        for slot in doc.slots or ():
            pixels = _image_steps(clock, slot, config.decode, image_filters, "image ")
            clock("image encode", lambda pixels=pixels: encode(pixels, config.output))
        for f in doc_filters:
            doc.scores.update(clock(f"text filter {f.name}", lambda f=f, doc=doc: f.score(doc))[0])
        text = clock("minhash: document_text", lambda doc=doc: document_text(doc))
        clock("minhash: signature", lambda text=text: signature(text, config.text_dedup))
        clock("alignment assign", lambda doc=doc: assign(doc.similarity, [sl.slot for sl in doc.slots or ()]))
    return {name: round(sec / len(docs) * 1e3, 3) for name, sec in clock.spent.items()}


def caption_steps(s: Setup, limit: int | None = None) -> dict[str, float]:
    """Milliseconds per image of each step of the caption path on the first unit (the same images)."""
    from mmcurate.stages.image_decode import encode
    from mmcurate.stages.readers import read_unit

    config, clock = s.cap_config, Clock()
    filters = config.build_filters()
    recs = clock("read (image + sidecar files)", lambda: list(islice(read_unit(s.cap_units[0], config.read), limit)))
    for rec in recs:
        pixels = _image_steps(clock, rec, config.decode, filters, "")
        clock("encode", lambda pixels=pixels: encode(pixels, config.output))
    return {name: round(sec / len(recs) * 1e3, 3) for name, sec in clock.spent.items()}


# ---------------------------------------------------------------------------------------------------
# Figures, verdict, printing
# ---------------------------------------------------------------------------------------------------


def _figures(runs: list[Timing], s: Setup, used: int) -> dict[str, Any]:
    t = best_of(runs)
    return {
        "wall_s": round(t.wall, 3),
        "cpu_s": round(t.cpu, 3),
        "documents_per_s": round(s.docs / t.wall, 1),
        "images_per_s": round(s.images / t.wall, 1),
        "documents_per_s_per_core": round(s.docs / t.wall / used, 1),
        "images_per_s_per_core": round(s.images / t.wall / used, 1),
        "ms_per_image": round(t.wall / s.images * 1e3, 3),
        "all_wall_s": [round(r.wall, 3) for r in runs],
    }


def _results(variants: Variants, runs: dict[str, list[Timing]], outcomes: dict[str, Outcome],
             errors: dict[str, list[str]], s: Setup) -> dict[str, dict[str, Any]]:  # fmt: skip
    results: dict[str, dict[str, Any]] = {}
    for key, (label, path, used, _fn) in variants.items():
        res: dict[str, Any] = {"label": label, "path": path, "cores": used, "errors": errors[key]}
        if runs[key]:
            res.update(_figures(runs[key], s, used))
        if key in outcomes:
            o = outcomes[key]
            res.update(counts=o.counts, reasons=o.reasons, kept_images=o.kept_images, accounting_ok=o.accounting_ok)
        results[key] = res
    return results


def _ratio(results: dict[str, dict[str, Any]], inter: str, cap: str) -> float | None:
    a, b = results.get(inter, {}).get("ms_per_image"), results.get(cap, {}).get("ms_per_image")
    return round(a / b, 3) if a and b else None


def _checks(results: dict[str, dict[str, Any]], s: Setup, ratio: float | None) -> dict[str, bool]:
    def kept_enough(r: dict[str, Any]) -> bool:
        counts = r.get("counts", {})
        docs = counts.get("document", {}).get("kept", s.docs) if r["path"] == "interleaved" else s.docs
        return r.get("kept_images", 0) >= MIN_KEPT * s.images and docs >= MIN_KEPT * s.docs

    return {
        f"interleaved/caption_per_image<={TARGET_RATIO}": ratio is not None and ratio <= TARGET_RATIO,
        "accounting_ok": all(r.get("accounting_ok") for r in results.values())
        and not any(r["errors"] for r in results.values()),
        f"kept>={MIN_KEPT:.0%}": all(kept_enough(r) for r in results.values() if "counts" in r),
        "same_image_dedup": _same_dedup(results),
        "documents>=2000": s.docs >= 2000,
    }


def measured_of(results: dict[str, dict[str, Any]], ratio: float | None, images: int) -> dict[str, Any]:
    """The figures the table shows beside the checks: the per-image ratio, the smallest kept share."""
    kept = [r.get("kept_images", 0) / images for r in results.values() if images and "kept_images" in r]
    return {f"interleaved/caption_per_image<={TARGET_RATIO}": ratio, f"kept>={MIN_KEPT:.0%}": min(kept, default=None)}


def _same_dedup(results: dict[str, dict[str, Any]]) -> bool:
    """Both paths read the same images: run-wide image dedup must drop the same number of them."""
    dups = {
        key: sum(n for reason, n in r["reasons"].get(r["path"] if r["path"] == "caption" else "image", {}).items()
                 if reason.startswith("duplicate_"))
        for key, r in results.items() if "reasons" in r
    }  # fmt: skip
    return len(set(dups.values())) <= 1


def _print_table(results: dict[str, dict[str, Any]], reps: int) -> None:
    print()
    cols = (("wall s", 7), ("docs/s", 7), ("img/s", 7), ("cores", 5), ("docs/s/core", 11), ("img/s/core", 10),
            ("ms/img", 7), ("kept img", 8))  # fmt: skip
    table_head(f"{'variant':48s} ", cols)
    for r in results.values():
        docs_s = r.get("documents_per_s") if r["path"] == "interleaved" else None
        docs_core = r.get("documents_per_s_per_core") if r["path"] == "interleaved" else None
        print(
            f"{r['label']:48s} {cell(r.get('wall_s'), 7, '.2f')} {cell(docs_s, 7)} {cell(r.get('images_per_s'), 7)} "
            f"{r['cores']:5d} {cell(docs_core, 11)} {cell(r.get('images_per_s_per_core'), 10)} "
            f"{cell(r.get('ms_per_image'), 7, '.2f')} {r.get('kept_images', 0):8d}"
        )
        print_errors(r["errors"], reps)
        for kind, reasons in r.get("reasons", {}).items():
            if reasons:
                print(f"    {kind} dropped/quarantined: {dict(sorted(reasons.items(), key=lambda kv: -kv[1]))}")
    print()


def _print_steps(name: str, steps: dict[str, float], per: str) -> None:
    total = sum(steps.values())
    print(f"  (steps) {name}, bare loop over the first unit: {total:.2f} ms per {per}")
    for step, ms in sorted(steps.items(), key=lambda kv: -kv[1]):
        print(f"      {step:42s} {ms:8.3f} ms  {ms / total:6.1%}")


def _print_verdict(checks: dict[str, bool], ratio: float | None, ratio_mp: float | None, workers: int) -> None:
    print(
        f"  interleaved / caption seconds per image, 1 worker = {cell(ratio, 0, '.2f')}x (target <= {TARGET_RATIO})  "
        f"{VERDICT[checks[f'interleaved/caption_per_image<={TARGET_RATIO}']]}"
    )
    if ratio_mp is not None:
        print(f"  the same on {workers} worker processes = {ratio_mp:.2f}x (informational)")
    print(f"  every run's accounting holds: {VERDICT[checks['accounting_ok']]}")
    print(f"  each run kept >= {MIN_KEPT:.0%} of the images and documents: {VERDICT[checks[f'kept>={MIN_KEPT:.0%}']]}")
    print(f"  both paths drop the same number of duplicate images: {VERDICT[checks['same_image_dedup']]}")
    print(f"  corpus of >= 2,000 documents: {VERDICT[checks['documents>=2000']]}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("interleaved")
    group.add_argument("--docs", type=int, default=2000, help="documents of 3 images each (default 2000)")


def run(args: argparse.Namespace) -> bool:
    s = _setup(args)
    variants = _variants(s)
    print(
        f"interleaved: {s.docs} documents x {IMAGES_PER_DOC} images ({s.corpus.name}), {len(s.int_units)} jsonl "
        f"units / {len(s.cap_units)} caption folder units, best of {args.reps}"
    )
    load_before = os.getloadavg()[0]
    print(f"  load average before: {load_before:.2f} on {s.cores} cores")
    interleaved_steps(s, 5), caption_steps(s, 15)  # warm-up: imports, first calls (scipy's DCT, datasketch)
    steps = {"interleaved_ms_per_document": interleaved_steps(s), "caption_ms_per_image": caption_steps(s)}
    # warm-up: imports, Beam start-up, page cache (one unit of each)
    full_run(caption_pipeline.CORPUS, s.cap_config, s.cap_inputs, s.cap_units[:1], 1)
    full_run(interleaved_pipeline.CORPUS, s.int_config, s.int_inputs, s.int_units[:1], 1)
    runs, outcomes, errors = _measure(variants, args.reps)
    load_after = os.getloadavg()[0]

    results = _results(variants, runs, outcomes, errors, s)
    ratio, ratio_mp = _ratio(results, "int", "cap"), _ratio(results, "int2", "cap2")
    checks = _checks(results, s, ratio)
    _print_table(results, args.reps)
    _print_steps("interleaved", steps["interleaved_ms_per_document"], "document")
    _print_steps("caption", steps["caption_ms_per_image"], "image")
    _print_verdict(checks, ratio, ratio_mp, s.workers)
    print_load(load_before, load_after)

    report = {
        "benchmark": "interleaved",
        "created": created(),
        "documents": s.docs,
        "images": s.images,
        "units": {"interleaved": len(s.int_units), "caption": len(s.cap_units)},
        "corpus": json.loads((s.corpus / "corpus.json").read_text()),
        "reps": args.reps,
        "results": results,
        "interleaved_vs_caption_per_image": ratio,
        "interleaved_vs_caption_per_image_multi_processing": ratio_mp,
        "steps": steps,
        "measured": measured_of(results, ratio, s.images),
        "checks": checks,
        "passed": all(checks.values()),
        "env": environment(s.cores, load_before, load_after, pillow=Image.__version__),
    }
    write_report("interleaved", report)

    if args.profile:
        print("profiling (one run each on the first unit, cProfile, in-process DirectRunner) ...")
        profile_to(
            OUT_DIR / "profile-interleaved.txt",
            lambda: full_run(interleaved_pipeline.CORPUS, s.int_config, s.int_inputs, s.int_units[:1], 1),
        )
        profile_to(
            OUT_DIR / "profile-interleaved-caption.txt",
            lambda: full_run(caption_pipeline.CORPUS, s.cap_config, s.cap_inputs, s.cap_units[:1], 1),
        )
    return report["passed"]
