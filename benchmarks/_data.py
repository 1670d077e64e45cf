"""Benchmark inputs shared by the scripts."""

import io


def photo_jpeg_blobs(n: int, side: int = 512, quality: int = 95) -> list[bytes]:
    """The scikit-image photographs scaled so the long side is `side` px, saved as JPEG, repeated to n blobs."""
    from PIL import Image

    from mmcurate.sample_data import load_photos

    base = []
    for img in load_photos().values():
        w, h = img.size
        s = side / max(w, h)
        im = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality)
        base.append(buf.getvalue())
    return [base[i % len(base)] for i in range(n)]
