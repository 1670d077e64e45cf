"""Column names and Arrow types, stated once.

A batch is a `pyarrow.Table`. Readers produce the input columns; stages append columns (never rename
or drop the input ones). Pixels never appear in a batch: image bytes stay encoded, and only
what stages derive from them (sizes, hashes, scores, embeddings) flows on.
"""

import pyarrow as pa

# What every reader yields, one row per sample.
INPUT_FIELDS = [
    pa.field("key", pa.string(), nullable=False),  # the shard's __key__ or the relative path: stable id
    pa.field("source", pa.string(), nullable=False),  # shard / file the sample was read from
    pa.field("image", pa.binary()),  # original encoded bytes (null if the member is missing)
    pa.field("image_ext", pa.string()),  # extension in the source ("jpg", "png", "webp", ...)
    pa.field("caption", pa.string()),  # caption text (null if none)
    pa.field("meta", pa.string()),  # original per-sample JSON metadata, as text ("{}" if none)
]
# Set by a reader on a row it could not read (reason, one-line detail); null when the sample read fine. The map
# phase's first step (pipeline.read_step) turns such rows into rejects of stage "read" and drops these columns.
READ_ERROR_FIELDS = [pa.field("read_reason", pa.string()), pa.field("read_detail", pa.string())]
SAMPLE_SCHEMA = pa.schema(INPUT_FIELDS + READ_ERROR_FIELDS)
INPUT_SCHEMA = pa.schema(INPUT_FIELDS)

# Conversation columns: what a reader of instruction data (io/llava.py) yields after SAMPLE_SCHEMA's columns, one
# row per conversation (io/conversations.py says how they are derived from the record). Roles are normalised:
# "human" (LLaVA's human, also user), "gpt" (gpt, also assistant), "system"; any other role string lower-cased.
TURN_TYPE = pa.struct([pa.field("role", pa.string()), pa.field("text", pa.string())])
CONVERSATION_FIELDS = [
    pa.field("turns", pa.list_(TURN_TYPE)),  # every turn in order, <image> placeholders kept; null: no conversation
    pa.field("n_turns", pa.int32()),
    pa.field("question", pa.string()),  # the first human turn, <image> placeholders removed
    pa.field("answer", pa.string()),  # the first gpt turn (also `caption`, for the caption stages)
    pa.field("image_paths", pa.list_(pa.string())),  # every image the record names, in order ([] text-only)
    pa.field("has_image", pa.bool_()),  # false: a text-only sample, which the image stages pass untouched
]
CONVERSATION_SAMPLE_SCHEMA = pa.schema(INPUT_FIELDS + READ_ERROR_FIELDS + CONVERSATION_FIELDS)

# Columns stages add (a stage may add others; these are the shared names).
DERIVED_FIELDS = {
    "width": pa.int32(),
    "height": pa.int32(),
    "format": pa.string(),  # integrity
    "file_size": pa.int64(),
    "sha256": pa.string(),  # exact_dedup
    "phash": pa.uint64(),  # phash_dedup
    "pdq": pa.binary(32),  # phash_dedup with hash: pdq (PDQ-256 code, Meta's byte order)
    "pdq_quality": pa.int16(),
    "pdq_phash": pa.uint64(),  # the exact pHash of the decode PDQ hashed (integrity's `phash` is the fast one)
    # image_quality's signals (mmcurate.ops.quality), measured in integrity's fused decode
    "sharpness": pa.float32(),
    "brightness": pa.float32(),
    "contrast": pa.float32(),
    "colourfulness": pa.float32(),
    "border_fraction": pa.float32(),
    "flat_fraction": pa.float32(),
    "entropy": pa.float32(),
    "low_information": pa.bool_(),
    "caption_original": pa.string(),  # caption_clean
    "pii_redactions": pa.string(),  # pii_redact: JSON {kind: count}
    "language": pa.string(),
    "language_score": pa.float32(),  # caption_filter (when asked)
}

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # short machine-readable reason, e.g. "corrupt", "min_side"
        pa.field("detail", pa.string()),  # human-readable detail, e.g. the decoder's message
    ]
)

DUPLICATES_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("duplicate_of", pa.string(), nullable=False),  # the kept representative's key
        # "exact" | "phash" | "pdq" | "template" | "semantic" | ...; a "template" link (phash_dedup with hash: pdq)
        # names a template variant of duplicate_of (same layout, another print or text), removed only with
        # templates: drop
        pa.field("kind", pa.string(), nullable=False),
        pa.field("distance", pa.float64()),  # 0 for exact, Hamming bits for phash/pdq (to `via`)
        # the second signal that verified the link: for kind "pdq" the exact-pHash Hamming distance between the
        # duplicate and the sample it was linked to; null for every other kind
        pa.field("verify_distance", pa.float64()),
        # kind "pdq"/"template" with dihedral matching: the transform (mmcurate.reference.TRANSFORMS) mapping the
        # duplicate onto the sample it was linked to ("identity", "flip_y", "rot90", ...); null for every other kind
        pa.field("transform", pa.string()),
    ]
)
# duplicates.parquet adds the direct link where it differs from duplicate_of: a representative that a
# later global step found to be a duplicate itself is replaced by that step's representative.
# representative_kept is false when a later non-dedup step (e.g. a filter listed after the dedup steps)
# removed the representative: list filters before dedup steps to keep every group represented.
DUPLICATES_OUTPUT_SCHEMA = DUPLICATES_SCHEMA.append(pa.field("via", pa.string())).append(
    pa.field("representative_kept", pa.bool_())
)


def conform_duplicates(table: pa.Table) -> pa.Table:
    """A step's duplicate links in DUPLICATES_SCHEMA: the nullable columns a producer did not fill (e.g.
    verify_distance) added as nulls, the others cast."""
    for f in DUPLICATES_SCHEMA:
        if f.name not in table.column_names:
            table = table.append_column(f, pa.nulls(table.num_rows, f.type))
    return table.select(DUPLICATES_SCHEMA.names).cast(DUPLICATES_SCHEMA)


def empty_rejects() -> pa.Table:
    return REJECTS_SCHEMA.empty_table()


def rejects_table(keys, sources, stage: str, reasons, details) -> pa.Table:
    n = len(keys)
    if isinstance(reasons, str):
        reasons = [reasons] * n
    return pa.table(
        {
            "key": pa.array(keys, pa.string()),
            "source": pa.array(sources, pa.string()),
            "stage": pa.array([stage] * n, pa.string()),
            "reason": pa.array(reasons, pa.string()),
            "detail": pa.array(details, pa.string()),
        },
        schema=REJECTS_SCHEMA,
    )
