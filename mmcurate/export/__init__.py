"""Exports of a finished run into a training format: `mmcurate export RUN_DIR --format FORMAT --out DIR`.

llava: LLaVA's conversation JSON per split, the kept images, a dataset card (mmcurate/export/llava.py).
"""

FORMATS = ("llava",)
