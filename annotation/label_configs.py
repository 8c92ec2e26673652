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


def label_config(family: str, taxonomies: Mapping[str, Sequence[str]] | None = None) -> str:
    """The XML of a family's config, with each named control's options replaced (in that order).
    A name that is no control of the family, or an empty list, is a ValueError naming it."""
    if family not in FAMILIES:
        raise ValueError(f"annotation family {family!r} unknown; known: {', '.join(FAMILIES)}")
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
