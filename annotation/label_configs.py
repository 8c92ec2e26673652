"""The labeling configs (`annotation/configs/<family>.xml`), one Label Studio project per family.

A run may replace a control's taxonomy (the action labels, the camera motions) without editing the
XML: `label_config("actions", {"action": ["cook", "clean"]})`. The config's hash names the project,
so a changed taxonomy is a new project, never a silent change to one with answers in it.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

from mmcurate.schemas.annotation import FAMILIES

CONFIG_DIR = Path(__file__).parent / "configs"
OPTION_TAGS = {"TimelineLabels": "Label", "Labels": "Label", "Choices": "Choice"}
REGION_TAGS = ("TimelineLabels", "VideoRectangle")
"""Controls that make regions (a per-region control asks about the regions of its family's one)."""
SCENE_CONTROL = "scene"
"""The actions config's read-only-by-convention timeline of the clip's scenes (push's pre-annotation):
an annotator's answer carries it back when they start from the prediction; it is no action."""


COMBINED = "combined"
"""All families' controls in one config: one project, one task per clip (fewer tasks to open; the
agreement is still measured per family, over the family's controls)."""


def label_config(family: str, taxonomies: Mapping[str, Sequence[str]] | None = None) -> str:
    """The XML of a family's config (or `combined`), with each named control's options replaced (in
    that order). A name that is no control of the family, or an empty list, is a ValueError naming it."""
    if family == COMBINED:
        return combined_config(taxonomies)
    if family not in FAMILIES:
        raise ValueError(f"annotation family {family!r} unknown; known: {', '.join(FAMILIES)}, {COMBINED}")
    root = ET.fromstring((CONFIG_DIR / f"{family}.xml").read_text(encoding="utf-8"))
    controls = {el.get("name"): el for el in root.iter() if el.tag in OPTION_TAGS}
    for name, options in (taxonomies or {}).items():
        if name not in controls:
            raise ValueError(f"annotation.taxonomies.{family}.{name}: no such control (have {', '.join(controls)})")
        if not options or len(set(options)) != len(options):
            raise ValueError(f"annotation.taxonomies.{family}.{name}: needs distinct options, got {list(options)}")
        el = controls[name]
        for child in list(el):
            el.remove(child)
        for option in options:
            ET.SubElement(el, OPTION_TAGS[el.tag], value=str(option))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def config_hash(xml: str) -> str:
    """12 hex digits of the config's BLAKE2b: part of the project title, so push finds its project."""
    return hashlib.blake2b(xml.encode("utf-8"), digest_size=6).hexdigest()


def options(xml: str, control: str) -> list[str]:
    """The option values of one control of a config."""
    root = ET.fromstring(xml)
    for el in root.iter():
        if el.tag in OPTION_TAGS and el.get("name") == control:
            return [c.get("value", "") for c in el]
    raise ValueError(f"config has no control {control!r}")


def control_names(xml: str) -> set[str]:
    """The names of a config's answer controls (choices, labels, text areas): what gold can ask."""
    return {el.get("name", "") for el in ET.fromstring(xml).iter() if el.tag in (*OPTION_TAGS, "TextArea")}


def family_controls(family: str) -> set[str]:
    """The answer controls of one family's own config."""
    return control_names(label_config(family))


def combined_config(taxonomies: Mapping[str, Sequence[str]] | None = None) -> str:
    """The families' configs in one View over one video, each family's part under its own header."""
    taxonomies = dict(taxonomies or {})
    owned = {c: f for f in FAMILIES for c in family_controls(f)}
    unknown = sorted(set(taxonomies) - set(owned))
    if unknown:
        raise ValueError(f"annotation.taxonomies.{COMBINED}.{unknown[0]}: no such control (have {', '.join(owned)})")
    root = ET.Element("View")
    for i, family in enumerate(FAMILIES):
        mine = {c: v for c, v in taxonomies.items() if owned[c] == family}
        part = ET.fromstring(label_config(family, mine))
        regions = [el.get("name") for el in part if el.tag in REGION_TAGS and el.get("name") != SCENE_CONTROL]
        for el in part:
            if el.tag == "Video" and i > 0:
                continue  # one player for every part
            if el.get("perRegion") == "true" and regions:
                el.set("whenTagName", regions[0])  # a box's transcription, not an action's, and back
            root.append(el)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"
