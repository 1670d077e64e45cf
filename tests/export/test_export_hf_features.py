"""export/hf_features.py writes `datasets` features without `datasets`: checked against `datasets`' own forms."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from mmcurate.export import hf_features as hff

datasets = pytest.importorskip("datasets")

TYPES = [
    pa.string(),
    pa.int32(),
    pa.int64(),
    pa.float32(),
    pa.float64(),
    pa.bool_(),
    pa.null(),
    pa.list_(pa.string()),
    pa.struct([("a", pa.int64()), ("b", pa.list_(pa.struct([("from", pa.string()), ("synthetic", pa.bool_())])))]),
    pa.list_(pa.list_(pa.float64())),
]


@pytest.mark.parametrize("t", TYPES, ids=str)
def test_json_and_yaml_forms_are_datasets_own(t):
    expected = datasets.Features.from_arrow_schema(pa.schema([("c", t)]))
    assert hff.feature_json(t) == expected.to_dict()["c"]
    assert [hff.feature_yaml("c", t)] == expected._to_yaml_list()
    assert datasets.Features._from_yaml_list([hff.feature_yaml("c", t)]) == expected


def test_image_column_metadata_reads_as_an_image():
    cols = [("image", hff.IMAGE), ("key", pa.string())]
    schema = pa.schema([(n, hff.storage_type(t)) for n, t in cols], metadata=hff.schema_metadata(cols))
    features = datasets.Features.from_dict(json.loads(schema.metadata[b"huggingface"])["info"]["features"])
    assert isinstance(features["image"], datasets.Image)
    assert features.arrow_schema.field("image").type == hff.IMAGE_TYPE
    assert datasets.Features._from_yaml_list([hff.feature_yaml(n, t) for n, t in cols]) == features


def test_unify_merges_structs_and_refuses_conflicts():
    a = pa.array([{"x": 1, "n": None}]).type
    b = pa.array([{"x": 2.5, "n": "t", "y": [1]}]).type
    assert hff.unify(a, b) == pa.struct([("x", pa.float64()), ("n", pa.string()), ("y", pa.list_(pa.int64()))])
    with pytest.raises(ValueError):
        hff.unify(pa.array([{"i": "a"}]).type, pa.array([{"i": ["a"]}]).type)
    assert not hff.supported(pa.map_(pa.string(), pa.int64())) and hff.supported(b)
