"""The reason registry: every reason code a record can end with, and whether it is a drop or a quarantine.

A code means the same in every corpus (`missing_image` is a quarantine whether a caption row or a
question names the image). `Record.settle(code)` takes the status from here, so no stage decides on
its own whether its verdict is a drop or a quarantine, and a code nobody registered is a bug that
fails loudly. Filters register their reasons when they are defined (`stages.base.register`); every
other code is listed below, in one place.

`redecide` says whether `mmcurate select` may re-decide a record that carries the code: true for
verdicts that come from thresholds, dedup or a parent's children (they follow from scores), false
for facts about the input (a broken file stays broken; a scene too short to cut stays too short).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .base import Status


@dataclass(frozen=True)
class Reason:
    code: str
    status: Status
    doc: str
    redecide: bool = False


REASONS: dict[str, Reason] = {}
_LOCK = threading.Lock()


class UnknownReason(KeyError):
    """A reason code that nobody registered: a bug in the stage that used it."""


def register_reason(code: str, status: Status, doc: str, redecide: bool = False) -> Reason:
    """Add a code; registering the same code again with another status or `redecide` is an error."""
    if status not in (Status.DROPPED, Status.QUARANTINED):
        raise ValueError(f"reason {code!r}: a reason is a drop or a quarantine, not {status.value}")
    new = Reason(code, status, doc, redecide)
    with _LOCK:
        old = REASONS.get(code)
        if old is not None and (old.status, old.redecide) != (new.status, new.redecide):
            raise ValueError(
                f"reason {code!r} is already a {old.status.value} (redecide={old.redecide}); "
                f"it cannot also be a {status.value} (redecide={redecide})"
            )
        if old is None:
            REASONS[code] = new
        return REASONS[code]


def reason(code: str) -> Reason:
    try:
        return REASONS[code]
    except KeyError:
        raise UnknownReason(f"reason code {code!r} is not registered (schemas/reasons.py)") from None


_D, _Q = Status.DROPPED, Status.QUARANTINED

for _code, _status, _doc, _redecide in (
    # The core: any corpus.
    (
        "internal_error",
        _Q,
        "a stage raised unexpectedly on this record (the stage and exception are kept), or a "
        "child record's parent was missing from its unit",
        False,
    ),
    ("model_error", _Q, "a model stage failed on this record alone (retried one element at a time)", False),
    ("read_error", _Q, "the input could not be read (for a broken container: the unread remainder)", False),
    ("bad_json", _Q, "a jsonl line that is not a JSON object", False),
    ("bad_row", _Q, "a row or member group that cannot be a record (a field of the wrong type, ...)", False),
    ("not_a_file", _Q, "a path that is no regular file (FIFO, device, directory): never opened for reading", False),
    ("outside_root", _Q, "a path leaving the input's root (.., absolute, URI, symlink out): not read", False),
    ("read_timeout", _Q, "reading took longer than read.timeout_s (output.media_timeout_s): abandoned", False),
    ("source_changed", _Q, "select: the input no longer holds what the parent run's ledger says", False),
    ("media_not_kept", _D, "select: now kept, but the parent run did not keep this record's media", True),
    ("duplicate_exact", _D, "identical content (pixels, file bytes or question) to a kept record", True),
    (
        "duplicate_near",
        _D,
        "near a better-ranked record (perceptual hash, a clip's crops or CLIP SimHash; clips: of another video)",
        True,
    ),
    ("column_threshold", _D, "a `where` rule on a ledger or overlay column failed", True),
    # Images (caption corpus and every image a corpus holds).
    ("missing_image", _Q, "the row names no image, or the image it names cannot be found", False),
    ("empty_file", _Q, "a zero-byte image file", False),
    ("decode_error", _Q, "the bytes do not decode as an image (or a video stream)", False),
    ("decompression_bomb", _D, "width x height from the header is over decode.max_pixels", False),
    (
        "multi_image",
        _D,
        "a caption row naming two or more images: its caption describes them together, so it pairs with none alone",
        False,
    ),
    # Videos and clips.
    ("missing_video", _Q, "the row names no video, or the video it names cannot be read", False),
    ("undecodable", _Q, "the decoders cannot open the file or decode its first frame", False),
    ("no_video_stream", _Q, "a container without a video stream", False),
    ("not_a_video", _Q, "a still image in a video container", False),
    ("too_few_frames", _Q, "fewer than two frames decode", False),
    ("zero_duration", _Q, "the video stream has no duration", False),
    ("decode_timeout", _Q, "probing or analysis ran over its time limit and was killed", False),
    ("decoder_crashed", _Q, "the decoding child process died", False),
    ("probe_error", _Q, "the probe failed unexpectedly in the child process", False),
    ("analysis_error", _Q, "the analysis failed unexpectedly in the child process", False),
    ("clip_error", _Q, "FFmpeg could not cut this clip, or it holds the wrong number of frames", False),
    ("clips_failed", _Q, "no clip kept because clips failed (an error, not a verdict)", False),
    ("too_short", _D, "a scene (or a clip) shorter than the minimum duration", False),
    ("no_clip_long_enough", _D, "every scene of the video is shorter than clips.min_duration", True),
    ("all_clips_dropped", _D, "every clip of the video was dropped", True),
    ("duplicate_video", _D, "a clip of a video dropped as a duplicate (duplicate_of: the kept video's id)", True),
    ("too_small", _D, "smaller than the minimum side (images: filters.min_side; clips: filters.clip_size)", True),
    # Interleaved documents and their image slots.
    (
        "bad_layout",
        _Q,
        "a document row whose layout breaks its format (OBELICS texts/images of unequal length or "
        "with not exactly one value per position, a similarity matrix of the wrong shape, ...)",
        False,
    ),
    ("empty_document", _D, "a document with neither text nor images", False),
    (
        "image_missing",
        _D,
        "the record names an image that the image root (or the row) does not hold (a document's image, a "
        "grounding sample's)",
        False,
    ),
    ("bad_anchor", _Q, "the image's anchor (MMC4 matched_text_index) points at no sentence of its document", False),
    ("no_images_left", _D, "every image of the document was dropped and min_images asks for at least one", True),
    ("too_few_images", _D, "fewer kept images than min_images once the image filters and dedup are done", True),
    ("document_dropped", _D, "an image of a document that was dropped or quarantined", True),
    ("duplicate_document", _D, "an image of a document dropped as a duplicate (duplicate_of: the kept document)", True),
    ("duplicate_url", _D, "a document with the same normalised URL as a kept one", True),
    ("duplicate_text", _D, "a MinHash near duplicate (estimated Jaccard over word shingles) of a kept document", True),
    # OCR samples.
    (
        "missing_ground_truth",
        _Q,
        "an image whose ground truth (gt_<name>.txt, a label row) the input does not hold",
        False,
    ),
    (
        "bad_label",
        _Q,
        "a ground-truth line that cannot be read (fewer than 8 or 4 coordinates, NaN or non-numeric "
        "values, no transcription field): the file and line are named",
        False,
    ),
    ("empty_ground_truth", _D, "a ground-truth file or row with no text line and no transcript", False),
    # Grounding samples and their regions.
    (
        "bad_box",
        _Q,
        "a region whose box cannot be read (not four numbers), or contradicts the input's read.box_format "
        "(a value above 1 in a 0-1 file, above 1000 on the grid): the value is named",
        False,
    ),
    (
        "bad_refs",
        _Q,
        "a RefCOCO refs file that is no list of refs, or a pickle holding anything but builtin "
        "containers and scalars (never executed)",
        False,
    ),
    ("bad_conversation", _Q, "a conversation whose boxes cannot be parsed (the text that failed is kept)", False),
    ("no_regions", _D, "a grounding sample whose input holds no region", False),
    (
        "duplicate_region",
        _D,
        "a region with the same phrase as an earlier region of its image and a box "
        "overlapping it above regions.merge_iou (duplicate_of: the region kept)",
        True,
    ),
    ("no_regions_left", _D, "every region of the sample was dropped and min_regions asks for at least one", True),
    ("too_few_regions", _D, "fewer kept regions than min_regions once the region filters are done", True),
    ("sample_dropped", _D, "a region of a grounding sample that was dropped or quarantined", True),
    ("duplicate_sample", _D, "a region of a sample dropped as a duplicate image (duplicate_of: the kept sample)", True),
    # Questions (pass-rate selection).
    ("bad_question", _Q, "a row that is no usable question (no text, no reference answer, bad type)", False),
    (
        "embedded_image",
        _Q,
        "a question whose image is stored in the row (HF Image bytes, a data: URL) while read.embedded_images "
        "is unset: questions refer to images by path",
        False,
    ),
    ("too_easy", _D, "pass rate at or above the too-easy bound", True),
    ("hopeless", _D, "pass rate at or below the hopeless bound", True),
    ("answer_leak", _D, "the reference answer appears in the question or its image text", True),
    ("answerable_blind", _D, "answered correctly without its images or video", True),
):
    register_reason(_code, _status, _doc, _redecide)
