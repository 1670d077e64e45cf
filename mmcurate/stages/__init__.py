"""Built-in stages, registered with mmcurate.pipeline.registry on import.

image: integrity, image_filter, exact_dedup, phash_dedup
quality: image_quality (sharpness, brightness, ... from integrity's decode; optional rejects)
text:  caption_clean, caption_filter, pii_redact
conversation: conversation_check, conversation_clean (instruction data read by the LLaVA reader)
instruction: instruction_dedup, answer_balance, option_order, template_stats, task_mix (instruction data)
negatives: negative_synthesis (POPE-style negative pairs appended to instruction data; optional)
split: split (leakage-free train/val/test)
clip:  clip_embed, clip_score_filter
heads: clip_heads (NSFW / watermark / aesthetic heads on the CLIP image embeddings)
semantic: semantic_dedup, balance
decontaminate: decontaminate (benchmark overlap against reference indexes, mmcurate.reference)
"""

import importlib

for _module in (
    "image",
    "quality",
    "text",
    "conversation",
    "instruction",
    "split",
    "clip",
    "heads",
    "semantic",
    "negatives",
    "decontaminate",
):
    importlib.import_module(f"mmcurate.stages.{_module}")
importlib.import_module("mmcurate.stages.answers")  # answer_filter (answer-aware text filtering)
