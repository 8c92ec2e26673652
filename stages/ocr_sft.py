"""Reading tasks for SFT from kept OCR samples, in LLaMA-Factory's ShareGPT layout.

Per sample: a full-page transcript ("read all the text"), and "read the text in the box" rows with
the box in GLM-4.5V's integer grid (`[x1,y1,x2,y2]`, each in [0, 1000) of the image's width and
height); a cropped word (task rec) gets one "what does it say" row. Only a sample's targets are
asked for (`OcrSample.targets`: not do-not-care, not contradicted by the model), and a page
transcript only when every line of the image is a target, since the transcript of a page with an
illegible or mislabelled region would teach a wrong answer. The prompts are templates (`SftParams`).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mmcurate.schemas import OcrLine, OcrSample, TextLine

from .base import Params
from .measure import quad_to_box, to_glm_grid

BOX_FIELDS = ("{x1}", "{y1}", "{x2}", "{y2}")


class SftParams(Params):
    enabled: bool = True
    """Write `sft/part-UUUUU.parquet` (+ `images/`, `dataset_info.json`) beside the shards."""
    name: str = "mmcurate_ocr"
    """The dataset's name in LLaMA-Factory's dataset_info.json."""
    page_prompt: str = "<image>Read all the text in the image."
    box_prompt: str = "<image>Read the text in the box [{x1},{y1},{x2},{y2}]."
    """`{x1}`..`{y2}`: the line's box on GLM-4.5V's grid, integers in [0, 1000)."""
    word_prompt: str = "<image>What does the text in the image say?"
    boxes_per_image: int = Field(8, ge=0)
    """Box-reading rows per image at most (the first targets in input order); 0: none."""
    page: bool = True
    """Full-page transcript rows (det samples whose lines are all targets, and transcripts)."""

    def model_post_init(self, _context: object) -> None:
        for key in ("page_prompt", "box_prompt", "word_prompt"):
            value = getattr(self, key)
            if value.count("<image>") != 1:
                raise ValueError(
                    f"output.sft.{key} must hold exactly one <image> placeholder (LLaMA-Factory pairs each with "
                    f"one image), got {value!r}"
                )
        missing = [f for f in BOX_FIELDS if f not in self.box_prompt]
        if missing:
            raise ValueError(f"output.sft.box_prompt must name {', '.join(missing)} (the box's grid coordinates)")


def grid_box(quad: list[list[float]], width: int, height: int) -> tuple[int, int, int, int]:
    """The quad's bounding box on GLM-4.5V's grid, clamped into [0, 1000)."""
    return to_glm_grid(quad_to_box(quad), width, height)


def page_text(lines: list[TextLine], order: Any) -> str:
    """The lines' text in reading order (`order`: the verification's reading-order function over OcrLines)."""
    return order([OcrLine(box=ln.quad, text=ln.text, confidence=1.0) for ln in lines if ln.quad])


def _row(prompt: str, answer: str, image: str) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
        "images": [image],
        "videos": [],
    }


def sft_rows(rec: OcrSample, image: str, params: SftParams, order: Any) -> list[dict[str, Any]]:
    """The reading rows of one kept sample whose stored image is at `image` (relative to the dataset folder)."""
    if rec.task == "page":
        return [_row(params.page_prompt, rec.transcript, image)] if params.page and rec.transcript.strip() else []
    targets = rec.targets()
    if rec.task == "rec":
        return [_row(params.word_prompt, targets[0].text, image)] if targets else []
    rows = []
    if params.page and targets and len(targets) == len(rec.lines):
        rows.append(_row(params.page_prompt, page_text(targets, order), image))
    for line in targets[: params.boxes_per_image]:
        x1, y1, x2, y2 = grid_box(line.quad, rec.out_width or rec.width, rec.out_height or rec.height)
        if x1 >= x2 or y1 >= y2:  # a sliver under one grid step: the prompt could name no region
            continue
        prompt = params.box_prompt.format(x1=x1, y1=y1, x2=x2, y2=y2)
        rows.append(_row(prompt, line.text, image))
    return rows
