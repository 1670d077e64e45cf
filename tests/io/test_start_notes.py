"""Inputs whose captions or images the reader is not told where to find (WebDataset members under other
extensions, LLaVA images outside image_root): the run says so at its start and names the option."""

from __future__ import annotations

import io
import tarfile

from mmcurate.io import open_reader


def _tar(path, members):
    with tarfile.open(path, "w") as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def test_captions_under_another_extension_are_named(tmp_path):
    shard = _tar(tmp_path / "00000.tar", [(f"{i:03d}.{ext}", b"x") for i in range(3) for ext in ("jpg", "caption")])
    notes = open_reader(shard).start_notes()
    assert len(notes) == 1 and "no caption (.txt member)" in notes[0] and "caption_ext" in notes[0]
    assert open_reader(shard, caption_ext="caption").start_notes() == []


def test_images_under_other_extensions_are_named(tmp_path):
    shard = _tar(tmp_path / "00000.tar", [(f"{i:03d}.{ext}", b"x") for i in range(3) for ext in ("image", "txt")])
    notes = open_reader(shard).start_notes()
    assert len(notes) == 1 and "no image member" in notes[0] and "image_exts" in notes[0]


def test_a_normal_shard_has_no_notes(tmp_path):
    shard = _tar(tmp_path / "00000.tar", [(f"{i:03d}.{ext}", b"x") for i in range(3) for ext in ("jpg", "txt")])
    assert open_reader(shard).start_notes() == []


def test_llava_images_not_under_image_root_are_named(tmp_path):
    import json

    (tmp_path / "imgs" / "coco").mkdir(parents=True)
    (tmp_path / "imgs" / "coco" / "a.jpg").write_bytes(b"x")
    convo = [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A cat."}]
    records = [{"id": str(i), "image": "coco/a.jpg", "conversations": convo} for i in range(3)]
    path = tmp_path / "llava.json"
    path.write_text(json.dumps(records))
    notes = open_reader(path).start_notes()  # image_root defaults to the JSON's folder: coco/a.jpg is not there
    assert len(notes) == 1 and "3 of the first 3 records" in notes[0] and "image_root" in notes[0]
    assert open_reader(path, image_root=tmp_path / "imgs").start_notes() == []
