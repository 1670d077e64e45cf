"""Hugging Face `datasets` features written without `datasets` (a test dependency, not mmcurate's): the JSON form
that `Dataset.to_parquet` stores in a Parquet schema's ``huggingface`` metadata, and the YAML form of a dataset
card's ``dataset_info.features``, for Arrow types and the Image feature. The `hf` and `webdataset` exports use them;
tests/export checks them against `datasets`' own (`Features.from_dict`, `Features._from_yaml_list`).
"""

from __future__ import annotations

import json

import pyarrow as pa

#: The Image feature's storage, as `datasets` writes it.
IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
IMAGE = "image"  # a marker type for the functions below: the datasets.Image feature

_SIMPLE = [
    (pa.types.is_null, lambda t: "null"),
    (pa.types.is_boolean, lambda t: "bool"),
    (pa.types.is_integer, lambda t: str(t)),  # int8 ... uint64: Arrow's names are datasets'
    (pa.types.is_float16, lambda t: "float16"),
    (pa.types.is_float32, lambda t: "float32"),
    (pa.types.is_float64, lambda t: "float64"),
    (pa.types.is_string, lambda t: "string"),
    (pa.types.is_large_string, lambda t: "large_string"),
    (pa.types.is_binary, lambda t: "binary"),
    (pa.types.is_large_binary, lambda t: "large_binary"),
]


def dtype(t: pa.DataType) -> str | None:
    """datasets' Value dtype of a scalar Arrow type; None when it is no scalar this module writes."""
    for test, name in _SIMPLE:
        if test(t):
            return name(t)
    return None


def supported(t) -> bool:
    """Whether feature_json/feature_yaml can describe `t` (IMAGE, scalars, structs and lists of those)."""
    if t is IMAGE or dtype(t) is not None:
        return True
    if pa.types.is_struct(t):
        return all(supported(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return supported(t.value_type)
    return False


def feature_json(t) -> dict:
    """The feature of type `t` as `datasets` stores it in Parquet metadata (Features.to_dict)."""
    if t is IMAGE:
        return {"_type": "Image"}
    d = dtype(t)
    if d is not None:
        return {"dtype": d, "_type": "Value"}
    if pa.types.is_struct(t):
        return {t.field(i).name: feature_json(t.field(i).type) for i in range(t.num_fields)}
    if pa.types.is_list(t):
        return {"feature": feature_json(t.value_type), "_type": "List"}
    if pa.types.is_large_list(t):
        return {"feature": feature_json(t.value_type), "_type": "LargeList"}
    raise ValueError(f"no datasets feature for Arrow type {t}")


def _yaml_body(t) -> dict:
    """A feature's YAML without its name: {"dtype": ...}, {"struct": [...]} or {"list": ...}."""
    if t is IMAGE:
        return {"dtype": "image"}
    d = dtype(t)
    if d is not None:
        return {"dtype": d}
    if pa.types.is_struct(t):
        return {"struct": [feature_yaml(t.field(i).name, t.field(i).type) for i in range(t.num_fields)]}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        kind = "list" if pa.types.is_list(t) else "large_list"
        inner = _yaml_body(t.value_type)
        if list(inner) == ["dtype"]:
            return {kind: inner["dtype"]}
        if list(inner) == ["struct"]:
            return {kind: inner["struct"]}
        return {kind: inner}
    raise ValueError(f"no datasets feature for Arrow type {t}")


def feature_yaml(name: str, t) -> dict:
    """One entry of a dataset card's `dataset_info.features` (Features._to_yaml_list's form)."""
    return {"name": name, **_yaml_body(t)}


def schema_metadata(columns: list[tuple[str, object]]) -> dict[bytes, bytes]:
    """The Parquet schema metadata that makes `datasets` read the columns ((name, Arrow type or IMAGE)) as these
    features: an IMAGE column is the Image feature, not a struct."""
    features = {name: feature_json(t) for name, t in columns}
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


def storage_type(t) -> pa.DataType:
    """The Arrow type a column of type `t` (IMAGE or an Arrow type) is stored as."""
    return IMAGE_TYPE if t is IMAGE else t


def unify(a: pa.DataType | None, b: pa.DataType) -> pa.DataType:
    """The Arrow type that holds values of both `a` and `b` (structs merged field by field, nulls promoted); a
    ValueError when there is none (e.g. a text and a list under one name)."""
    if a is None or a == b:
        return b
    try:
        return (
            pa.unify_schemas([pa.schema([("v", a)]), pa.schema([("v", b)])], promote_options="permissive")
            .field("v")
            .type
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ValueError(str(exc)) from None
