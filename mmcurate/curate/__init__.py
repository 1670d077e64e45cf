"""Pure array/text algorithms with no pipeline knowledge (filters, dedup grouping, PII, captions)."""
