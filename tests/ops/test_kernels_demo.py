"""The main job on the built-in sample: every derived image is grouped with its original, broken files
are rejected with a reason, and nothing distinct is merged."""

import json
import subprocess
import sys


def test_demo_groups_the_sample_correctly(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mmcurate.cli", "kernels-demo", "--out", str(tmp_path), "--device", "cpu"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads((tmp_path / "kernel_demo.json").read_text())
    by_key = {s["key"]: s for s in report["samples"]}
    # re-encodes, resizes, brightness changes, byte copies and EXIF rotations all join their original;
    # 3%-per-side crops may escape pHash (reported, not hidden)
    assert report["missed_excluding_crops"] == []
    assert all(k.endswith("_crop") for k in report["missed"])
    # broken inputs are rejected with a status and a message, never silently dropped
    for key in ("broken_truncated", "broken_empty", "broken_html"):
        assert by_key[key]["status"] != "ok" and by_key[key]["error"], by_key[key]
    assert by_key["broken_empty"]["status"] == "empty"
    assert by_key["broken_html"]["status"] == "unsupported"
    assert by_key["broken_truncated"]["status"] == "truncated"
    # each group holds one photo and its variants only
    for group in report["groups"]:
        sources = {by_key[k]["source"] or k for k in group}
        assert len(sources) == 1, group
    originals = [s for s in report["samples"] if s["label"] == "original"]
    assert len(report["groups"]) == len(originals)
