"""Readers on hostile and damaged input: they read only what the user gave, never block or read without
bound, and turn every bad sample or shard into a row with a reject reason instead of raising.

Each test asserts: no exception, the reject reasons, kept + rejected == read at the reader level (every row
is either a clean sample or a reject of stage "read"), and for path escapes that the outside file's bytes
never appear in any yielded row.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest

from mmcurate.io import open_reader
from mmcurate.io.base import SHARD_ERROR_REASONS, split_read_rejects
from mmcurate.io.paths import expand_braces
from mmcurate.pipeline.schema import INPUT_SCHEMA, REJECTS_SCHEMA, SAMPLE_SCHEMA
from tests.hostile import builders_shards as B


def read_rows(reader, batch_size: int = 3) -> list[dict]:
    """Every row of every shard; checks each batch's schema and that split_read_rejects accounts for it."""
    rows = []
    for shard in reader.shards():
        for batch in reader.read(shard, batch_size=batch_size):
            # SAMPLE_SCHEMA, then the reader's own columns (the LLaVA reader's conversation columns)
            assert (
                batch.schema.equals(reader.schema) and reader.schema.names[: len(SAMPLE_SCHEMA)] == SAMPLE_SCHEMA.names
            )
            kept, rejected = split_read_rejects(batch)
            own = [f for f in reader.schema if f.name not in SAMPLE_SCHEMA.names]
            assert kept.schema.equals(pa.schema(list(INPUT_SCHEMA) + own)) and rejected.schema.equals(REJECTS_SCHEMA)
            assert kept.num_rows + rejected.num_rows == batch.num_rows  # kept + rejected == read
            assert set(rejected.column("stage").to_pylist()) <= {"read"}
            rows.extend(batch.to_pylist())
    keys = [(r["source"], r["key"]) for r in rows]
    assert len(set(keys)) == len(keys), "keys must stay unique per source"
    for r in rows:
        if r["read_reason"] is not None:
            assert r["image"] is None and r["caption"] is None and r["meta"] == "{}"
            assert r["read_detail"] and "\n" not in r["read_detail"] and len(r["read_detail"]) <= 500
    return rows


def reasons(rows) -> dict[str, str | None]:
    return {r["key"]: r["read_reason"] for r in rows}


def assert_no_secret(rows):
    for r in rows:
        for v in r.values():
            if isinstance(v, bytes):
                assert B.SECRET not in v
            elif isinstance(v, str):
                assert "PRIVATE-PHOTO" not in v


# -- paths: only what the user gave ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_llava_never_reads_outside_image_root_or_special_files(tmp_path, fmt):
    path, expected = B.hostile_llava(tmp_path / "root", tmp_path / "outside", fmt)
    t = time.monotonic()
    rows = read_rows(open_reader(path))
    assert time.monotonic() - t < 10  # the FIFO entry must not block
    got = reasons(rows)
    for key, reason in expected.items():
        if reason == "bad_key":
            continue
        assert got[key] == reason, (key, got[key], [r["read_detail"] for r in rows if r["key"] == key])
    bad_keys = [k for k, v in got.items() if v == "bad_key"]
    assert len(bad_keys) == 2 and all(k.startswith("__bad_key__") for k in bad_keys)
    details = " ".join(r["read_detail"] for r in rows if r["read_reason"] == "bad_key")
    assert "'../../etc/passwd'" in details and "'line\\nbreak'" in details
    by_key = {r["key"]: r for r in rows}
    assert by_key["ok"]["image"] == (tmp_path / "root" / "img" / "ok.jpg").read_bytes()
    assert by_key["dotdot_in"]["image"] == by_key["ok"]["image"]
    assert by_key["missing"]["image"] is None and by_key["missing"]["read_reason"] is None
    n_entries = len(expected) + (2 if fmt == "jsonl" else 0)
    assert len(rows) == n_entries
    if fmt == "jsonl":  # the unparsable and the too-deep lines are one reject each
        assert sorted(v for k, v in got.items() if k.startswith("entry_")) == ["bad_meta", "bad_meta"]
    assert_no_secret(rows)


def test_llava_allow_outside_root_opts_out_but_special_files_stay_rejected(tmp_path):
    path, _ = B.hostile_llava(tmp_path / "root", tmp_path / "outside")
    got = {r["key"]: r for r in read_rows(open_reader(path, allow_outside_root=True))}
    assert got["absolute"]["image"] == B.SECRET and got["symlink"]["image"] == B.SECRET
    assert got["dev_zero"]["read_reason"] == "not_a_file"  # /dev/zero: never an unbounded read
    assert got["fifo"]["read_reason"] == "not_a_file"
    with pytest.raises(ValueError, match="allow_outside_root must be true or false"):
        open_reader(path, allow_outside_root="yes")


def test_llava_max_image_bytes(tmp_path):
    path, _ = B.hostile_llava(tmp_path / "root", tmp_path / "outside")
    got = reasons(read_rows(open_reader(path, max_image_bytes=2000)))
    assert got["ok"] is None and got["big"] == "too_large"
    assert reasons(read_rows(open_reader(path, max_image_bytes=10)))["ok"] == "too_large"
    for bad in (0, -1, True, 1.5, "64MB"):
        with pytest.raises(ValueError, match="max_image_bytes must be a positive integer"):
            open_reader(path, max_image_bytes=bad)


def test_folder_does_not_follow_links_out_of_root_nor_read_special_files(tmp_path):
    expected = B.hostile_folder(tmp_path / "root", tmp_path / "outside")
    t = time.monotonic()
    rows = read_rows(open_reader(tmp_path / "root", max_image_bytes=2000))
    assert time.monotonic() - t < 10
    got = reasons(rows)
    for key, reason in expected.items():
        if key == "__bad_key__":
            assert [v for k, v in got.items() if k.startswith("__bad_key__")] == ["bad_key"]
        else:
            assert got[key] == reason, (key, [r["read_detail"] for r in rows if r["key"] == key])
    assert not any(k.startswith("escape_dir") for k in got)  # a linked directory is not descended
    by_key = {r["key"]: r for r in rows}
    assert by_key["ok"]["caption"] == "a fine caption" and by_key["inside_link"]["image"] == by_key["ok"]["image"]
    assert "leak.txt" in by_key["leak"]["read_detail"]
    assert_no_secret(rows)
    # allow_outside_root reads the linked file, but /dev/zero is still not a regular file
    got = {r["key"]: r for r in read_rows(open_reader(tmp_path / "root", allow_outside_root=True))}
    assert got["escape"]["image"] == B.SECRET and got["zero"]["read_reason"] == "not_a_file"


def test_fifo_or_device_given_as_a_shard_is_a_one_line_error(tmp_path):
    fifo = B.make_fifo(tmp_path / "in.tar")
    with pytest.raises(ValueError, match=r"in\.tar' is not a regular file \(a FIFO\)"):
        open_reader(str(fifo))
    with pytest.raises(ValueError, match="not a regular file"):
        open_reader("/dev/zero", format="webdataset")
    with pytest.raises(ValueError, match="is not a regular file"):
        open_reader(str(B.make_fifo(tmp_path / "llava.jsonl")))
    (tmp_path / "imgs").mkdir()
    with pytest.raises(ValueError, match="caption file .* is not a regular file"):
        open_reader(tmp_path / "imgs", format="folder", captions=str(B.make_fifo(tmp_path / "caps.jsonl")))
    # a FIFO in a directory of shards is not listed (directory listings keep regular files only)
    B.four_shards_one_truncated(tmp_path / "ds", cut="at_header")
    B.make_fifo(tmp_path / "ds" / "zz.tar")
    assert len(open_reader(tmp_path / "ds").shards()) == 4


def test_brace_expansion_is_capped_before_expanding():
    t = time.monotonic()
    with pytest.raises(ValueError, match=r"expands to 10,000,000,000 paths \(limit 1,000,000\); list the shards"):
        expand_braces("s-{0..99999}{0..99999}.tar")
    with pytest.raises(ValueError, match="limit"):
        expand_braces("{" + ",".join("ab") + "}" * 1 + "{0..9}" * 7)
    with pytest.raises(ValueError, match="limit"):
        expand_braces("{a,{b,c}}{0..999999}")  # nested groups are counted too
    assert time.monotonic() - t < 1
    assert len(expand_braces("{0..999}{0..999}")) == 1_000_000  # at the limit: still expands


# -- tar members -----------------------------------------------------------------------------------------------


def test_bad_keys_are_rejected_with_unique_substitutes(tmp_path):
    path, good, bad = B.bad_key_shard(tmp_path / "keys.tar")
    rows = read_rows(open_reader(path))
    clean = [r["key"] for r in rows if r["read_reason"] is None]
    rejected = [r for r in rows if r["read_reason"] is not None]
    assert clean == good and len(rows) == len(good) + len(bad)
    assert {r["read_reason"] for r in rejected} == {"bad_key"}
    assert all(r["key"].startswith("__bad_key__") and "\n" not in r["key"] for r in rejected)
    details = " | ".join(r["read_detail"] for r in rejected)
    for shown in ("'../../etc/evil'", "'/abs/evil'", "'new\\nline'", "'nul\\x00byte'", "'a/../b'"):
        assert shown in details
    # deterministic: the same shard gives the same substitute keys
    assert [r["key"] for r in read_rows(open_reader(path))] == [r["key"] for r in rows]


def test_deep_and_invalid_json_members_never_raise(tmp_path):
    path = B.deep_meta_shard(tmp_path / "deep.tar")
    rows = read_rows(open_reader(path))
    got = reasons(rows)
    assert got == {"ok1": None, "deep": "bad_meta", "ok2": None, "ok3": None}
    by_key = {r["key"]: r for r in rows}
    assert "nested deeper than" in by_key["deep"]["read_detail"]
    assert "__invalid_json__" in by_key["ok2"]["meta"] and by_key["ok3"]["caption"].startswith("\ufffd")


def test_unrecognised_layouts_give_one_clear_row(tmp_path):
    shards = B.unrecognised_shards(tmp_path / "u")
    for name in ("no_suffix", "directories_only", "links_only"):
        (row,) = read_rows(open_reader(shards[name]))
        assert row["read_reason"] == "shard_unrecognised" and row["key"] == "__shard_error__"
        assert "no sample" in row["read_detail"] and "shard_unrecognised" in SHARD_ERROR_REASONS
    rows = read_rows(open_reader(shards["unknown_suffixes"]))  # samples with no image: integrity rejects them
    assert [(r["key"], r["image"], r["read_reason"]) for r in rows] == [("a", None, None), ("b", None, None)]


def test_over_cap_members_are_skipped_unread(tmp_path):
    path = B.huge_header_tar(tmp_path / "huge.tar", declared=(2 << 30) + 12345)  # > 2 GiB member, sparse
    rows = read_rows(open_reader(path))
    assert reasons(rows) == {"a": None, "huge": "too_large", "c": None}
    assert "2,147,495,993 bytes" in {r["key"]: r for r in rows}["huge"]["read_detail"]
    assert [r["caption"] for r in rows if r["read_reason"] is None] == ["before", "after"]
    # caption and meta members have their own cap
    members = [
        ("a.jpg", b"x"),
        ("a.txt", b"y" * 1000),
        ("b.jpg", b"x"),
        ("b.json", b"{}" + b" " * 1000),
        ("c.jpg", b"x" * 100),
        ("c.txt", b"ok"),
    ]
    p = B.write_tar(tmp_path / "caps.tar", members)
    got = reasons(read_rows(open_reader(p, max_member_bytes=500, max_image_bytes=50)))
    assert got == {"a": "too_large", "b": "too_large", "c": "too_large"}
    with pytest.raises(ValueError, match="max_member_bytes must be a positive integer"):
        open_reader(p, max_member_bytes=True)


def test_big_member_in_small_tar_gz_stays_at_low_memory(tmp_path):
    path = B.big_member_tar_gz(tmp_path / "big.tar.gz", member_bytes=1_500_000_000)
    assert path.stat().st_size < 10_000_000
    script = textwrap.dedent(f"""
        import json
        from mmcurate.io import open_reader
        r = open_reader({str(path)!r})
        rows = [row for s in r.shards() for b in r.read(s) for row in b.to_pylist()]
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec, so it would report pytest's own peak.
        hwm_kb = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
        print(json.dumps({{"rss_mb": hwm_kb / 1024,
                          "rows": [(x["key"], x["read_reason"]) for x in rows]}}))
    """)
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = __import__("json").loads(out.stdout.strip().splitlines()[-1])
    assert res["rows"] == [["a", None], ["big", "too_large"], ["c", None]]
    assert res["rss_mb"] < 500, res


# -- damaged shards ------------------------------------------------------------------------------------------------


def shard_rows(rows, path):
    return [r for r in rows if r["source"] == str(path)]


@pytest.mark.parametrize("cut", ["mid_member", "at_header", "in_skipped"])
def test_one_truncated_shard_among_four(tmp_path, cut):
    paths, before = B.four_shards_one_truncated(tmp_path / "ds", per_shard=5, which=2, cut=cut)
    rows = read_rows(open_reader(tmp_path / "ds"), batch_size=2)
    for i, p in enumerate(paths):
        mine = shard_rows(rows, p)
        if i != 2:
            assert len(mine) == 5 and all(r["read_reason"] is None for r in mine)
            continue
        good, last = mine[:-1], mine[-1]
        assert [r["key"] for r in good] == [f"00002{j:04d}" for j in range(before)]
        assert all(r["read_reason"] is None and r["image"] for r in good)
        assert last["read_reason"] == "shard_truncated", last
        assert f"after {before} samples" in last["read_detail"] and "00002.tar" in last["read_detail"]
        # the sample that broke is named when known, else a key no real sample has
        assert last["key"] == ("__shard_error__" if cut == "at_header" else f"00002{before:04d}")


def test_zero_byte_not_a_tar_and_corrupt_gzip_shards(tmp_path):
    cases = {
        "zero": B.zero_byte_shard(tmp_path / "zero.tar"),
        "html": B.not_a_tar_shard(tmp_path / "html.tar"),
        "corrupt": B.corrupt_tar_gz(tmp_path / "corrupt.tar.gz"),
        "truncated_gz": B.truncated_tar_gz(tmp_path / "trunc.tar.gz"),
    }
    for name, path in cases.items():
        rows = read_rows(open_reader(path))
        last = rows[-1]
        assert last["read_reason"] in SHARD_ERROR_REASONS, (name, last)
        assert all(r["read_reason"] is None for r in rows[:-1])
        if name in ("zero", "html"):
            assert len(rows) == 1 and last["read_reason"] == "shard_unreadable" and last["key"] == "__shard_error__"
        else:
            assert len(rows) >= 2 and last["read_reason"] == "shard_truncated", (name, len(rows))


def test_shard_deleted_after_listing_is_one_row(tmp_path):
    paths, _ = B.four_shards_one_truncated(tmp_path / "ds", cut="at_header")
    reader = open_reader(tmp_path / "ds")
    paths[0].unlink()
    rows = [r for b in reader.read(str(paths[0])) for r in b.to_pylist()]
    assert [(r["key"], r["read_reason"]) for r in rows] == [("__shard_error__", "shard_unreadable")]


def test_shard_error_key_does_not_collide_with_a_real_key(tmp_path):
    members = [("__shard_error__.jpg", b"x"), ("__shard_error__.txt", b"a real sample"), ("b.jpg", b"y" * 2000)]
    path = B.write_tar(tmp_path / "c.tar", members)
    path.write_bytes(path.read_bytes()[:3000])  # cut inside b.jpg's data (its header ends at 2560)
    rows = read_rows(open_reader(path))
    assert [(r["key"], r["read_reason"]) for r in rows] == [("__shard_error__", None), ("b", "shard_truncated")]
    path.write_bytes(path.read_bytes()[:2048])  # cut right after the first sample: header damage
    rows = read_rows(open_reader(path))
    assert [(r["key"], r["read_reason"]) for r in rows] == [
        ("__shard_error__", None),
        ("__shard_error__~1", "shard_truncated"),
    ]


def test_split_read_rejects_contract():
    batch = pa.table(
        {
            "key": ["a", "b"],
            "source": ["s", "s"],
            "image": [b"1", None],
            "image_ext": ["jpg", None],
            "caption": ["c", None],
            "meta": ["{}", "{}"],
            "read_reason": [None, "too_large"],
            "read_detail": [None, "big"],
        },
        schema=SAMPLE_SCHEMA,
    )
    kept, rejected = split_read_rejects(batch)
    assert kept.column_names == INPUT_SCHEMA.names and kept.column("key").to_pylist() == ["a"]
    assert rejected.to_pylist() == [
        {"key": "b", "source": "s", "stage": "read", "reason": "too_large", "detail": "big"}
    ]
    plain = batch.drop_columns(["read_reason", "read_detail"])
    kept, rejected = split_read_rejects(plain)
    assert kept.equals(plain) and rejected.num_rows == 0
