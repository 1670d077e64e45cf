"""The LLaVA reader's shards: a map task (the reader opened again in a worker, or pickled) parses only its own
shard — JSONL shards are byte ranges of the file found once per process, a JSON list is parsed once per process —
and what it reads is what reading the file whole
gives: the same keys (repeats renamed across shards), rejects and line numbers, whatever the line endings."""

from __future__ import annotations

import json
import os
import pickle

import pytest

from mmcurate.io import llava
from mmcurate.io.llava import LlavaReader

CONV = [{"from": "human", "value": "<image>\nIs it red?"}, {"from": "gpt", "value": "Yes"}]


def _lines() -> list[str]:
    rows = [json.dumps({"id": f"s{i}", "conversations": CONV}) for i in range(7)]
    rows[2] = json.dumps({"id": "s0", "conversations": CONV})  # a repeat of shard 0's key, in shard 1
    rows[4] = '{"id": "broken", '  # a line that does not parse
    return rows


def _write(path, lines: list[str], ending: str) -> None:
    # a whitespace-only line after every other entry: not an entry, but counted as a line
    body = ending.join(line if i % 2 else line + ending + "  \x0c" for i, line in enumerate(lines)) + ending
    path.write_bytes(body.encode("utf-8"))


def _read(reader: LlavaReader) -> list[dict]:
    rows = []
    for shard in reader.shards():
        task = pickle.loads(pickle.dumps(reader))  # what a map task gets
        for batch in task.read(shard, batch_size=2):
            rows += [{k: v for k, v in r.items() if k != "source"} for r in batch.to_pylist()]
    return rows


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_jsonl_shards_read_what_the_whole_file_gives(tmp_path, ending):
    path = tmp_path / "llava.jsonl"
    _write(path, _lines(), ending)
    whole = _read(LlavaReader(path, shard_size=100, on_duplicate_key="suffix"))
    sharded = _read(LlavaReader(path, shard_size=2, on_duplicate_key="suffix"))
    assert sharded == whole
    assert [r["key"] for r in whole] == ["s0", "s1", "s0~1", "s3", "entry_4", "s5", "s6"]
    bad = whole[4]
    assert bad["read_reason"] == "bad_meta" and bad["read_detail"].startswith("line 7: invalid JSON")
    threes = LlavaReader(path, shard_size=3, on_duplicate_key="suffix")
    assert [threes.count(s) for s in threes.shards()] == [3, 3, 1]


def test_jsonl_repeated_key_across_shards_fails_when_opened(tmp_path):
    path = tmp_path / "llava.jsonl"
    _write(path, _lines(), "\n")
    with pytest.raises(ValueError, match="duplicate sample key 's0'"):
        LlavaReader(path, shard_size=2)


def _count_parses(monkeypatch) -> list[int]:
    calls = [0]
    loads = json.loads

    def counting(text, *args, **kwargs):
        calls[0] += 1
        return loads(text, *args, **kwargs)

    monkeypatch.setattr(json, "loads", counting)
    return calls


@pytest.mark.parametrize("how", ["opened again", "pickled"])
def test_a_jsonl_task_reads_and_parses_only_its_shard(tmp_path, monkeypatch, how):
    path = tmp_path / "llava.jsonl"
    n, shard_size = 1000, 100
    path.write_text("".join(json.dumps({"id": f"s{i}", "conversations": CONV}) + "\n" for i in range(n)))
    reader = LlavaReader(path, shard_size=shard_size)
    calls = _count_parses(monkeypatch)
    # what pipeline.executor.run_map_shard does in each task: open the reader again (same process: no parse)
    task = LlavaReader(path, shard_size=shard_size) if how == "opened again" else pickle.loads(pickle.dumps(reader))
    assert calls[0] == 0
    read_bytes = [0]
    real_open = open

    class Counting:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def seek(self, offset):
            return self.f.seek(offset)

        def read(self, size=-1):
            data = self.f.read(size)
            read_bytes[0] += len(data)
            return data

    monkeypatch.setattr(llava, "open", lambda *a, **k: Counting(real_open(*a, **k)), raising=False)
    rows = [r for b in task.read(task.shards()[5]) for r in b.to_pylist()]
    assert [r["key"] for r in rows] == [f"s{i}" for i in range(500, 600)]
    # one parse of each line and one of each kept record (its conversation columns): the shard's, no more
    assert calls[0] == 2 * shard_size
    assert read_bytes[0] < 2 * os.path.getsize(path) / (n // shard_size)


def test_a_json_list_is_parsed_once_per_process(tmp_path, monkeypatch):
    path = tmp_path / "llava.json"
    path.write_text(json.dumps([{"id": f"s{i}", "conversations": CONV} for i in range(50)]))
    reader = LlavaReader(path, shard_size=10)
    parsed = [0]
    load = json.load

    def counting(f, *args, **kwargs):
        parsed[0] += 1
        return load(f, *args, **kwargs)

    monkeypatch.setattr(json, "load", counting)
    rows = _read(reader)  # every shard through a pickled copy
    assert LlavaReader(path, shard_size=10).count(reader.shards()[-1]) == 10  # opened again in this process
    assert parsed[0] == 0
    assert [r["key"] for r in rows] == [f"s{i}" for i in range(50)]


def test_a_rewritten_file_is_parsed_again(tmp_path):
    path = tmp_path / "llava.jsonl"
    path.write_text(json.dumps({"id": "a", "conversations": CONV}) + "\n")
    assert LlavaReader(path).count(LlavaReader(path).shards()[0]) == 1
    tmp = tmp_path / "new.jsonl"
    tmp.write_text("".join(json.dumps({"id": k, "conversations": CONV}) + "\n" for k in "bc"))
    os.replace(tmp, path)
    reader = LlavaReader(path)
    assert [r["key"] for b in reader.read(reader.shards()[0]) for r in b.to_pylist()] == ["b", "c"]


@pytest.mark.parametrize("name", ["llava.jsonl", "llava.json"])
def test_a_file_changed_since_opening_is_an_error(tmp_path, name):
    path = tmp_path / name
    records = [{"id": f"s{i}", "conversations": CONV} for i in range(4)]
    path.write_text(json.dumps(records) if name.endswith(".json") else "".join(json.dumps(r) + "\n" for r in records))
    reader = LlavaReader(path, shard_size=2)
    with open(path, "a") as f:
        f.write("\n\n")
    with pytest.raises(ValueError, match="changed since the reader was opened"):
        list(pickle.loads(pickle.dumps(reader)).read(reader.shards()[1]))
