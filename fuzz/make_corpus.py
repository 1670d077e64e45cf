"""Regenerates the seed corpora in fuzz/corpus/ (small real images and shards; the whole corpus < 2 MB).

    .venv/bin/python fuzz/make_corpus.py

decode/: byte 0 is the fuzzer's option selector (see decode_fuzzer.cpp), the rest an image file made
from scikit-image's sample photos, resized small, in the encodings the decoders branch on.
readers/: byte 0 picks the reader (see readers_fuzzer.py), the rest a shard, a meta text or a LLaVA file.
"""

import io
import json
import os
import tarfile

import numpy as np
from PIL import Image
from skimage import data as skdata

HERE = os.path.dirname(os.path.abspath(__file__))


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def images() -> dict[str, bytes]:
    rgb = Image.fromarray(skdata.astronaut()).resize((40, 28), Image.BILINEAR)
    gray = Image.fromarray(skdata.camera()).resize((24, 36), Image.BILINEAR)
    coffee = Image.fromarray(skdata.coffee()).resize((33, 21), Image.BILINEAR)
    out = {}

    def save(name, im, fmt, **kw):
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        out[name] = buf.getvalue()

    save("baseline.jpg", rgb, "JPEG", quality=80)
    save("progressive.jpg", rgb, "JPEG", quality=70, progressive=True)
    save("gray.jpg", gray, "JPEG", quality=75)
    save("sub444_exif6.jpg", coffee, "JPEG", quality=90, subsampling=0, exif=_exif(6))
    save("cmyk.jpg", rgb.convert("CMYK"), "JPEG", quality=70)
    save("restart.jpg", coffee, "JPEG", quality=60, optimize=True)
    save("rgb.png", rgb, "PNG")
    save("rgba_interlaced.png", rgb.convert("RGBA"), "PNG", interlace=1)
    save("palette.png", coffee.convert("P"), "PNG")
    save("gray16.png", Image.fromarray(np.asarray(gray, np.uint16) * 257), "PNG")
    save("la_exif8.png", gray.convert("LA"), "PNG", exif=_exif(8))
    save("lossy.webp", rgb, "WEBP", quality=50)
    save("lossless.webp", coffee, "WEBP", lossless=True)
    save("alpha_exif3.webp", rgb.convert("RGBA"), "WEBP", quality=60, exif=_exif(3))
    return out


def tar_bytes(members, fmt=""):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w" + (":" + fmt if fmt else "")) as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def write(target, name, payload):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(payload)


def main():
    imgs = images()
    # Selectors: rgb, gray + exif, gray_luma + fast + scaled + phash, rgb + scaled + fast phash.
    for i, (name, payload) in enumerate(sorted(imgs.items())):
        for sel in (0x00, 0x05, 0x3A, 0x74):
            if (i + sel) % 2 == 0 or sel == 0x00:
                write("decode", f"{sel:02x}_{name}", bytes([sel]) + payload)

    jpg, png = imgs["baseline.jpg"], imgs["rgb.png"]
    shards = {
        "img2dataset.tar": tar_bytes(
            [
                ("000000000.jpg", jpg),
                ("000000000.txt", b"a photo of an astronaut"),
                ("000000000.json", b'{"url": "http://x/a.jpg", "width": 40}'),
                ("000000001.png", png),
                ("000000001.txt", b"caption two"),
                ("000000001.json", b"[1, 2]"),
            ]
        ),
        "dirs_escaped.tar": tar_bytes(
            [
                ("cats/a%2Ev2.jpg", jpg),
                ("cats/a%2Ev2.txt", "caf\u00e9".encode()),
                ("__meta__.json", b"{}"),
                ("dogs/b.cls", b"3"),
                ("dogs/b.webp", imgs["lossy.webp"]),
            ]
        ),
        "gzip.tar.gz": tar_bytes([("k1.jpg", jpg), ("k1.txt", b"x"), ("k2.txt", b"no image")], "gz"),
        "repeat.tar": tar_bytes([("a.jpg", jpg), ("b.txt", b"b"), ("a.txt", b"again")]),
    }
    for name, payload in shards.items():
        write("readers", "0_" + name, b"\x00" + payload)
    for i, meta in enumerate(
        [
            b'{"a": 1, "b": [true, null, "s"]}',
            b'{"nested": {"x": {"y": []}}}',
            b"not json",
            b'"a string"',
            b"",
            '{"u": "\u00e9\\ud800"}'.encode(),
        ]
    ):
        write("readers", f"1_meta{i}", b"\x01" + meta)
    entries = [
        {
            "id": "1",
            "image": "a.jpg",
            "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A photo."}],
        },
        {"image": ["a.jpg", "b.png"], "conversations": [{"from": "gpt", "value": "two"}]},
        {"conversations": [{"from": "human", "value": "text only"}]},
        {"id": "4", "image": "missing.png"},
    ]
    write("readers", "2_llava.json", b"\x02" + json.dumps(entries).encode())
    write("readers", "3_llava.jsonl", b"\x03" + "\n".join(json.dumps(e) for e in entries).encode())


if __name__ == "__main__":
    main()
