"""Caption stages: caption_clean, caption_filter, pii_redact."""
