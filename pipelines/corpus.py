"""The corpus registry: every corpus is one `Corpus` object, found by name.

The CLI sub-commands, the `make` targets, the output parts `--overwrite` clears, `mmcurate summary`
and `mmcurate select` all come from here; the finish path (`pipelines/finish.py`) calls a corpus's
hooks and knows nothing else of it. Adding a corpus: a schema file, a reader adapter, its stages,
and one recipe module defining a `Corpus` subclass, named here in one line.
"""

from __future__ import annotations

import abc
import contextlib
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from mmcurate.schemas import Fields, Record

if TYPE_CHECKING:
    import apache_beam as beam

    from mmcurate.stages.dedup import DedupParams
    from mmcurate.stages.io import Unit
    from mmcurate.stages.minhash import MinHashParams
    from mmcurate.stages.writers import FileInfo, ShardInfo, ShardParams

    from .finish import Run


@dataclass(frozen=True)
class Entry:
    """What the CLI needs of a corpus without importing its recipe (and its heavy libraries)."""

    target: str
    """`module:attribute` of the Corpus object."""
    help: str
    inputs: str
    """Help text of --input."""
    options: tuple[Option, ...] = ()
    """Sub-command options that set a config key (e.g. `ocr --from-run` sets `from_run.run`)."""
    input_instead: str = ""
    """An option that may stand in for --input (then --input is optional and exclusive with it)."""


@dataclass(frozen=True)
class Option:
    """A corpus's own command-line option: the flag, the config key it sets (dotted), its help."""

    flag: str
    key: str
    help: str
    many: bool = False
    requires: str = ""
    """Another option this one only makes sense with (`--reasons` needs `--from-run`)."""


@dataclass(frozen=True)
class Tool:
    """A command of a corpus that runs no pipeline (e.g. `ocr-render`): `module:function(args) -> int`
    and `module:function(parser)` that adds its arguments."""

    target: str
    arguments: str
    help: str


REGISTRY: dict[str, Entry] = {
    "caption": Entry(
        "mmcurate.pipelines.caption:CORPUS",
        "image-caption pairs: read, score, dedup, select, shard",
        "URIs: tar shards, parquet, jsonl, image folders",
    ),
    "video": Entry(
        "mmcurate.pipelines.video:CORPUS",
        "videos: probe, split at scene cuts, clip, score, shard, queue for annotation",
        "URIs: video files or folders, video tar shards, jsonl",
    ),
    "interleaved": Entry(
        "mmcurate.pipelines.interleaved:CORPUS",
        "interleaved image-text documents: read, score text and images, align, dedup, shard or export",
        "URIs: MMC4 / Data-Juicer jsonl, OBELICS parquet or jsonl (images under read.image_root)",
    ),
    "ocr": Entry(
        "mmcurate.pipelines.ocr:CORPUS",
        "OCR samples: read labels, verify them with PP-OCR, filter, dedup, shard, write reading SFT rows",
        "URIs: ICDAR image folders (+ read.gt_root), COCO-Text / mmocr JSON, recognition label files, "
        "transcript jsonl or tars; or --from-run CAPTION_RUN",
        options=(
            Option(
                "--from-run",
                "from_run.run",
                "a finished caption run: its images dropped for --reasons "
                "become pseudo-labelled OCR samples (re-read from their sources)",
            ),
            Option(
                "--reasons",
                "from_run.reasons",
                "with --from-run: the caption run's drop reasons to take (default: text_heavy)",
                many=True,
                requires="--from-run",
            ),
        ),
        input_instead="--from-run",
    ),
    "grounding": Entry(
        "mmcurate.pipelines.grounding:CORPUS",
        "grounding samples: read boxes and expressions, validate and convert boxes, check them with CLIP, "
        "shard, write SFT rows, box questions and ODVG",
        "URIs: ODVG jsonl, RefCOCO refs(...).p / refs JSON (+ read.instances), LLaVA / ShareGPT grounding "
        "conversations, our own jsonl or tars (images under read.image_root)",
    ),
    "sft": Entry(
        "mmcurate.pipelines.passrate:SFT",
        "grade questions by a model's pass rate (k rollouts), emit SFT data",
        "question jsonl / parquet URIs",
    ),
    "rl": Entry(
        "mmcurate.pipelines.passrate:RL",
        "grade questions by a model's pass rate (k rollouts), emit RL data in tiers",
        "question jsonl / parquet URIs",
    ),
}


TOOLS: dict[str, Tool] = {
    "ocr-render": Tool(
        "mmcurate.pipelines.ocr_render:main",
        "mmcurate.pipelines.ocr_render:arguments",
        "render synthetic OCR samples (documents, receipts, scene text) with exact labels, for `mmcurate ocr`",
    ),
}
"""Commands of the corpora that are no pipeline run, by name."""


def remove_tree(uri: str) -> None:
    """A folder and all it holds, on any fsspec filesystem; nothing when it is not there."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)


class UnknownCorpus(KeyError):
    pass


def get(name: str) -> Corpus:
    try:
        entry = REGISTRY[name]
    except KeyError:
        raise UnknownCorpus(f"no corpus {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    module, attr = entry.target.split(":")
    return getattr(importlib.import_module(module), attr)


class SelectUnsupported(ValueError):
    """`select` cannot re-decide this run (the message says what to do instead)."""


class Corpus(abc.ABC):
    """One corpus: its config, records, recipe, and the hooks the shared finish path calls."""

    name: ClassVar[str]
    defaults: ClassVar[str]
    """The YAML file of embedded defaults in pipelines/configs/."""
    config_class: ClassVar[type]
    kinds: ClassVar[tuple[type[Record], ...]]
    """Record kinds written, the one read from the input first (its input count is the read count)."""
    sample_kind: ClassVar[str | None] = None
    """The kind whose kept records become webdataset samples in shards/, or None."""
    decided_kind: ClassVar[str | tuple[str, ...] | None] = None
    """The kind(s) the filters decide (each filter the kinds it names; `where` rules the first);
    None: the primary kind."""
    outputs: ClassVar[tuple[str, ...]] = ()
    """Output parts beyond the shared layout (cleared by --overwrite)."""

    @property
    def primary(self) -> str:
        return self.kinds[0].kind

    @property
    def decides(self) -> str | tuple[str, ...]:
        return self.decided_kind or self.primary

    # -- before the run
    def load_config(self, path: str | None, base: dict | None = None) -> Any:
        """The embedded defaults, or `base` (a parent run's config for select), overridden by `path`."""
        from .config import load_config

        return load_config(path, self.config_class, self.defaults, base)

    def validate(self, config: Any) -> None:
        """What must hold before any input is read (binaries, model weights, endpoints)."""
        return None

    @abc.abstractmethod
    def list_units(self, inputs: list[str], config: Any) -> list[Unit]:
        """The units of parallel work the inputs hold (raises InputError for unusable inputs)."""

    def lineage(self, config: Any) -> dict[str, Any]:
        """What the manifest's lineage says besides the inputs (e.g. the model and rollout cache)."""
        return {}

    def fields(self, config: Any) -> dict[str, Fields]:
        """The score and label names each kind carries in a run with this config."""
        return {k.kind: Fields() for k in self.kinds}

    # -- the recipe
    @abc.abstractmethod
    def build(self, p: beam.Pipeline, units: list[Unit], config: Any, run: Run) -> beam.PCollection:
        """The recipe, ending in `Finish`; returns the PCollection holding the manifest."""

    def dedup(self, config: Any) -> DedupParams | None:
        """Run-wide dedup in the finish path (records with a `dedup_key`), or None for none."""
        return None

    def text_dedup(self, config: Any) -> MinHashParams | None:
        """Run-wide near-duplicate text (records whose `dedup_key` has a MinHash `sig`), or None."""
        return None

    def shard(self, config: Any) -> ShardParams | None:
        return None

    # -- the finish path, per unit
    def before_dedup(self, records: dict[str, list[Record]], config: Any) -> None:
        """Settle what must be settled before run-wide dedup picks which copy of a repeat to keep
        (a video none of whose clips survived must not win over a healthy copy)."""
        return None

    def settle_children(self, parent: Record, children: list[Record], config: Any) -> None:
        """Pending children of a parent that is settled already (e.g. the clips of a duplicate video)."""
        return None

    def settle_parent(self, parent: Record, children: list[Record], config: Any) -> None:
        """A pending parent's fate from its settled children (a video from its clips); pending = kept."""
        return None

    def fetch_media(self, records: dict[str, list[Record]], run: Run, config: Any) -> dict[str, Any]:
        """Read, by URI, what the unit's own outputs will hold (a trainer file's images), after the
        records are settled and before any table is written: a kept record whose media cannot be
        read is quarantined here, so the ledger and the counts say so and no output misses it."""
        return {}

    def unit_outputs(
        self, unit: int, records: dict[str, list[Record]], shards: list[ShardInfo], run: Run, config: Any,
        media: dict[str, Any],
    ) -> tuple[list[FileInfo], dict[str, Any]]:  # fmt: skip
        """The corpus's own files for one unit (trainer files, annotation queue) and its extras;
        `media` is what `fetch_media` read."""
        return [], {}

    def release(self, unit: int, run: Run, config: Any) -> None:
        """Remove what only the unit's commit needed (the corpus's own spool files), right after its
        summary is durable, so the spool holds only the units not yet committed. The finish path
        releases the shared spool (`_spool/part-UUUUU/`) itself. Called again for a unit committed
        before (`--resume`, a retried bundle): what is gone already is no error."""
        return None

    # -- the finish path, once
    def fold_extras(self, extras: list[dict[str, Any]], config: Any) -> dict[str, Any]:
        return {}

    def run_outputs(self, run: Run, config: Any) -> list[FileInfo]:
        """Files written once per run, beside the manifest (e.g. LLaMA-Factory's dataset_info.json)."""
        return []

    def describe(self, manifest: dict[str, Any]) -> list[Any]:
        """Extra lines or rich tables for `mmcurate summary` (the kind tables are generic)."""
        return []

    # -- select
    def check_select(self, config: Any, parent_config: Any, parent: dict[str, Any]) -> None:
        """Refuse a select config that needs what the parent run did not compute."""
        return None

    def select(self, p: beam.Pipeline, units: list[Unit], config: Any, run: Run) -> beam.PCollection:
        """Records of every kind from the parent run's ledgers (and media), re-decided, then Finish."""
        raise SelectUnsupported(f"select cannot re-decide {self.name} runs")
