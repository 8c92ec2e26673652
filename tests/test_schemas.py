"""Record dataclasses and the pyarrow schema derived from them: columns on disk must match the Python type."""

from __future__ import annotations

import dataclasses
import enum
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmcurate.schemas import (
    REASONS,
    RECORD_KINDS,
    SCHEMA_VERSION,
    CaptionSample,
    Fate,
    Fields,
    Source,
    Status,
    UndeclaredField,
    UnknownReason,
    register_reason,
)
from mmcurate.schemas.base import PAYLOAD, Record, arrow_type

FIELDS = Fields(("width", "lang_prob", "clip_score"), ("lang",))


class Colour(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Inner:
    a: int
    b: str = ""


@dataclass(kw_only=True)
class Everything(Record):
    """One field of every supported hint kind."""

    kind = "everything"

    s: str
    i: int = 0
    f: float = 0.0
    flag: bool = False
    raw: bytes = b""
    maybe: Optional[int] = None  # noqa: UP045 - the typing spelling must be supported too
    maybe_new: str | None = None
    colour: Colour = Colour.RED
    tags: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=lambda: Inner(0))
    blob: bytes | None = field(default=None, metadata=PAYLOAD, repr=False, compare=False)


def sample(**kw: object) -> CaptionSample:
    base: dict[str, object] = {
        "id": "0" * 32,
        "source": Source(uri="memory:///in/a.tar", unit=3, member="k1", index=7),
        "caption": "a red bicycle leaning on a wall",
        "extra": '{"url": "http://example.com/x.jpg"}',
        "file_bytes": 12345,
        "width": 640,
        "height": 480,
        "mode": "RGB",
        "image_format": "jpeg",
        "pixel_hash": "ab" * 32,
        "phash": "8f373714acfcf4d0",
        "scores": {"width": 640.0, "lang_prob": 0.93},
        "labels": {"lang": "en"},
        "fate": Fate(Status.DROPPED, reason="too_small", duplicate_of="f" * 32),
    }
    base.update(kw)
    return CaptionSample(**base)  # type: ignore[arg-type]


def test_arrow_type_scalars_and_containers() -> None:
    """Each hint maps to the arrow type a reader of the parquet would expect."""
    assert arrow_type(str) == (pa.string(), False)
    assert arrow_type(int) == (pa.int64(), False)
    assert arrow_type(float) == (pa.float64(), False)
    assert arrow_type(bool) == (pa.bool_(), False)
    assert arrow_type(bytes) == (pa.binary(), False)
    assert arrow_type(Colour) == (pa.string(), False)
    assert arrow_type(Optional[int]) == (pa.int64(), True)  # noqa: UP045
    assert arrow_type(int | None) == (pa.int64(), True)
    assert arrow_type(list[str]) == (pa.list_(pa.string()), False)
    typ, nullable = arrow_type(Inner)
    assert not nullable
    assert typ == pa.struct([pa.field("a", pa.int64(), nullable=False), pa.field("b", pa.string(), nullable=False)])


@pytest.mark.parametrize("hint", [Union[int, str], int | str | None, set[int], object, dict[str, float]])  # noqa: UP007
def test_arrow_type_rejects_unsupported_hints(hint: object) -> None:
    """A hint with no faithful arrow type is an error at import time, not a lossy column; a dict is
    not mapped at all (no Arrow `map`: Hugging Face datasets cannot load one), it must be declared."""
    with pytest.raises(TypeError):
        arrow_type(hint)


def test_schema_leaves_out_payload_and_carries_version() -> None:
    """Payload fields (image bytes, pixels) never become columns; the schema version travels in metadata."""
    schema = CaptionSample.arrow_schema(FIELDS)
    payload_names = {f.name for f in dataclasses.fields(CaptionSample) if f.metadata.get("arrow") is False}
    assert payload_names == {"image", "pixels", "overlay", "media", "rank"}
    assert not payload_names & set(schema.names)
    assert set(schema.names) == {f.name for f in dataclasses.fields(CaptionSample)} - payload_names
    assert schema.names[:2] == ["id", "source"] and schema.names[-4:] == ["scores", "labels", "errors", "fate"]
    assert schema.metadata[b"mmcurate.schema_version"] == SCHEMA_VERSION.encode()
    assert schema.metadata[b"mmcurate.kind"] == b"caption"
    assert schema.field("source").type == pa.struct(
        [
            pa.field("uri", pa.string(), nullable=False),
            pa.field("unit", pa.int64(), nullable=False),
            pa.field("member", pa.string(), nullable=False),
            pa.field("index", pa.int64(), nullable=False),
        ]
    )
    assert schema.field("fate").type.get_field_index("status") >= 0


def test_scores_and_labels_are_structs_of_the_declared_names() -> None:
    """No Arrow map anywhere: scores are a struct of the run's declared names (columns every tool reads),
    errors a list of (stage, error) pairs; a kind with no declared scores has no scores column."""
    schema = CaptionSample.arrow_schema(FIELDS)
    assert schema.field("scores").type == pa.struct([(n, pa.float64()) for n in sorted(FIELDS.scores)])
    assert schema.field("labels").type == pa.struct([("lang", pa.string())])
    assert schema.field("errors").type == pa.list_(pa.struct([("stage", pa.string()), ("error", pa.string())]))
    assert "scores" not in CaptionSample.arrow_schema(Fields()).names

    def no_maps(t: pa.DataType) -> bool:
        if pa.types.is_map(t):
            return False
        if pa.types.is_struct(t):
            return all(no_maps(t.field(i).type) for i in range(t.num_fields))
        if pa.types.is_list(t):
            return no_maps(t.value_type)
        return True

    for cls in RECORD_KINDS.values():
        assert all(no_maps(f.type) for f in cls.arrow_schema(FIELDS)), cls.kind


def test_an_undeclared_score_is_an_error_before_any_file() -> None:
    with pytest.raises(UndeclaredField, match="'aesthetic'"):
        sample(scores={"width": 1.0, "aesthetic": 5.0}).to_row(FIELDS)


def test_every_hint_kind_round_trips_through_a_table() -> None:
    """to_row -> arrow table -> from_row gives the same record back, enums and nested dataclasses included."""
    rec = Everything(
        s="x",
        i=-3,
        f=2.5,
        flag=True,
        raw=b"\x00\xff",
        maybe=4,
        colour=Colour.BLUE,
        tags=["a", "b"],
        scores={"z": 1.0, "a": 2.0},
        errors={"decode": "a warning"},
        inner=Inner(5, "q"),
        blob=b"not a column",
        id="e",
        source=Source("u", 0),
    )
    fields = Fields(("a", "z"))
    table = Everything.to_table([rec, Everything(s="y", id="f", source=Source("u", 0))], fields)
    assert table.schema == Everything.arrow_schema(fields)
    assert table.num_rows == 2
    assert "blob" not in table.column_names
    back = [Everything.from_row(r) for r in table.to_pylist()]
    assert back[0] == rec  # blob is compare=False, everything else must survive
    assert back[0].colour is Colour.BLUE
    assert back[0].blob is None
    assert back[1] == Everything(s="y", id="f", source=Source("u", 0))
    assert back[1].maybe is None and back[1].scores == {} and back[0].errors == {"decode": "a warning"}


def test_caption_sample_round_trips_through_parquet() -> None:
    """The ledger is parquet: a record written and read back equals the original (payload aside)."""
    recs = [sample(), sample(id="1" * 32, fate=Fate(), scores={}, labels={}, image=b"jpeg bytes")]
    buf = io.BytesIO()
    pq.write_table(CaptionSample.to_table(recs, FIELDS), buf)
    rows = pq.read_table(io.BytesIO(buf.getvalue())).to_pylist()
    back = [CaptionSample.from_row(r) for r in rows]
    assert back == recs
    assert back[0].fate.status is Status.DROPPED
    assert back[0].source == recs[0].source
    assert back[0].scores == {"width": 640.0, "lang_prob": 0.93}
    assert back[1].image is None


def test_to_row_is_plain_and_declared() -> None:
    """Rows hold only plain values; scores hold every declared name (None where not computed)."""
    row = sample(scores={"width": 2.0, "lang_prob": 1.0}).to_row(FIELDS)
    assert "image" not in row
    assert "pixels" not in row
    assert row["scores"] == {"clip_score": None, "lang_prob": 1.0, "width": 2.0}
    assert row["fate"]["status"] == "dropped"
    assert row["source"] == {"uri": "memory:///in/a.tar", "unit": 3, "member": "k1", "index": 7}


def test_sample_json_has_one_type_per_field() -> None:
    """The webdataset JSON member must type the same in every sample (Hugging Face's loader infers
    types from the first five): absent scores are NaN, absent labels '', errors one string, no lists."""
    meta = sample(errors={"ocr": "not read", "decode": "x"}).sample_json(FIELDS)
    assert meta["scores"]["width"] == 640.0 and meta["scores"]["clip_score"] != meta["scores"]["clip_score"]
    assert meta["labels"] == {"lang": "en"}
    assert meta["errors"] == "decode: x; ocr: not read"
    assert "ocr" not in meta and "fate" not in meta
    assert sample_json_keys(sample()) == sample_json_keys(sample(scores={}, labels={}, errors={}))


def sample_json_keys(rec: CaptionSample) -> dict:
    meta = rec.sample_json(FIELDS)
    return {k: (sorted(v) if isinstance(v, dict) else type(v).__name__) for k, v in meta.items()}


def test_settle_takes_the_status_from_the_reason_registry() -> None:
    """`missing_image` is a quarantine in every corpus; a code nobody registered is a bug, not a fate."""
    rec = sample(fate=Fate(), image=b"jpeg")
    rec.settle("missing_image", "e" * 5000, stage="read")
    assert rec.fate.status is Status.QUARANTINED and len(rec.fate.error) == 2000 and rec.image is None
    assert rec.errors["read"] == rec.fate.error
    assert sample(fate=Fate()).settle("duplicate_exact", duplicate_of="x").fate.status is Status.DROPPED
    with pytest.raises(UnknownReason):
        sample(fate=Fate()).settle("no_such_reason")
    assert {r.status for r in REASONS.values()} == {Status.DROPPED, Status.QUARANTINED}
    with pytest.raises(ValueError, match="already a quarantine"):
        register_reason("missing_image", Status.DROPPED, "a drop now?")


def test_from_row_ignores_unknown_columns() -> None:
    """Reading an index parquet (which adds key/shard columns) still yields a record."""
    rec = sample()
    row = {**rec.to_row(FIELDS), "key": rec.id, "shard": "part-00000-0000.tar"}
    assert CaptionSample.from_row(row) == rec


def test_source_ref() -> None:
    assert Source("s3://b/x.tar", 0, member="000123").ref() == "s3://b/x.tar#000123"
    assert Source("/data/img.jpg", 2).ref() == "/data/img.jpg"


@pytest.mark.parametrize(
    ("status", "final"),
    [(Status.PENDING, False), (Status.KEPT, False), (Status.DROPPED, True), (Status.QUARANTINED, True)],
)
def test_fate_final(status: Status, final: bool) -> None:
    """Only dropped and quarantined are final: a later stage may still drop a kept record."""
    assert Fate(status).final is final


def test_uid_is_unique_and_orders_like_input() -> None:
    """Identical content read at two places has one id but two uids; uids sort in (unit, index) order."""
    places = [(0, 5), (0, 40), (1, 0), (12, 3), (3, 999_999)]
    recs = [sample(source=Source("u", unit=u, index=i)) for u, i in places]
    assert len({r.id for r in recs}) == 1
    assert len({r.uid for r in recs}) == len(recs)
    assert sorted(recs, key=lambda r: r.uid) == sorted(recs, key=lambda r: (r.source.unit, r.source.index))


def test_payload_is_not_compared_or_shown() -> None:
    """Two records differing only in payload are equal, and repr never dumps image bytes."""
    a, b = sample(image=b"A" * 1000), sample(image=b"B" * 10)
    assert a == b
    assert "AAAA" not in repr(a)


def test_record_kinds_registry() -> None:
    """Every record kind is registered under its own `kind`, and each has a derivable arrow schema."""
    from mmcurate.schemas import (
        ROW_KINDS,
        ClipRecord,
        DocumentRecord,
        GroundingSample,
        ImageSlot,
        OcrSample,
        Question,
        RegionRecord,
        Rollout,
        VideoRecord,
    )  # fmt: skip

    assert {
        "caption": CaptionSample, "question": Question, "video": VideoRecord, "clip": ClipRecord,
        "document": DocumentRecord, "image": ImageSlot, "ocr": OcrSample, "grounding": GroundingSample,
        "region": RegionRecord,
    } == RECORD_KINDS  # fmt: skip
    assert {**RECORD_KINDS, "rollout": Rollout} == ROW_KINDS
    for kind, cls in ROW_KINDS.items():
        assert cls.kind == kind
        assert len(cls.arrow_schema()) > 0


def test_video_and_clip_rows_round_trip_without_payload(tmp_path: Path) -> None:
    """Video bytes, clip files and sampled frames travel with records but never reach a ledger."""
    from mmcurate.schemas import ClipRecord, OcrLine, VideoRecord

    video = VideoRecord(id="v", source=Source("a.mp4", 0), cuts=[3, 9], scores={"x": 1.0}, data=b"raw", path="/a")
    row = video.to_row(Fields(("x",)))
    assert "data" not in row and "path" not in row
    assert VideoRecord.from_row(row) == dataclasses.replace(video, data=None, path=None)
    clip = ClipRecord(
        id="c", video_id="v", source=Source("a.mp4", 0), clip_index=2, labels={"camera_motion": "pan_left"},
        ocr=[OcrLine([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], "HI", 0.9)], frames=[1, 2, 3],
        media=str(tmp_path / "c.mp4"),
    )  # fmt: skip
    (tmp_path / "c.mp4").write_bytes(b"mp4")
    table = ClipRecord.to_table([clip], Fields(labels=("camera_motion",)))
    assert "mp4" not in table.column_names and "frames" not in table.column_names and "media" not in table.column_names
    back = ClipRecord.from_row(table.to_pylist()[0])
    assert back.labels == {"camera_motion": "pan_left"} and back.ocr[0].text == "HI"
    assert clip.members() == {"mp4": b"mp4", "txt": b""} and clip.parent_uid == video.uid
