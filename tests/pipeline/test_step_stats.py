"""The global steps' stats: one dataclass per step, read by field; the manifest gets their to_dict() form."""

import json

import numpy as np
import pyarrow as pa
import pytest

from mmcurate.pipeline.global_phase import run_on_table
from mmcurate.pipeline.stage import StepStats, registry, stats_dict
from mmcurate.stages.clip import ClipScoreFilterStats
from mmcurate.stages.image import ExactDedupStats, PhashDedupStats
from mmcurate.stages.semantic import BalanceStats, SemanticDedupStats
from mmcurate.stages.split import SplitStats


def test_to_dict_leaves_out_what_does_not_apply_and_from_dict_trusts_nothing():
    s = SplitStats(counts={"train": 3}, groups=2, seconds=0.5)
    assert s.to_dict() == {"seconds": 0.5, "counts": {"train": 3}, "groups": 2}
    back = SplitStats.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s and back.warning is None
    # a manifest from anywhere: unknown keys ignored, missing ones None, a non-mapping gives an empty record
    odd = BalanceStats.from_dict({"levels": "<script>", "bogus": 1})
    assert odd.levels == "<script>" and odd.before is None and not hasattr(odd, "bogus")
    assert BalanceStats.from_dict(["not", "a", "dict"]) == BalanceStats()
    assert stats_dict({"a": 1}) == {"a": 1} and stats_dict(None) == {}  # a third-party step's plain dict


def _table(n=60):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    x[1::2] = x[::2] + 1e-3  # planted near copies
    digests = [f"{i // 2:064x}" for i in range(n)]
    return pa.table(
        {
            "key": [f"k{i:03d}" for i in range(n)],
            "source": ["s"] * n,
            "sha256": digests,
            "phash": pa.array(rng.integers(0, 2**63, n).astype(np.uint64) // 2 * 2, pa.uint64()),
            "clip_score": pa.array(rng.random(n).astype(np.float32)),
            "image_embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 8),
        }
    )


@pytest.mark.parametrize(
    "name, params, kind",
    [
        ("exact_dedup", {}, ExactDedupStats),
        ("phash_dedup", {}, PhashDedupStats),
        ("semantic_dedup", {"n_clusters": 2, "device": "cpu"}, SemanticDedupStats),
        ("balance", {"fraction": 0.5, "levels": [4], "device": "cpu"}, BalanceStats),
        ("clip_score_filter", {"threshold": 0.5}, ClipScoreFilterStats),
        ("split", {"phash_radius": None}, SplitStats),
    ],
)
def test_every_global_step_reports_its_stats_dataclass(name, params, kind):
    res = run_on_table(registry.create(name, params), _table())
    assert type(res.stats) is kind and isinstance(res.stats, StepStats)
    d = res.stats.to_dict()
    assert d["seconds"] >= 0 and None not in d.values()
    assert kind.from_dict(json.loads(json.dumps(d))) == res.stats  # what the report reads back
