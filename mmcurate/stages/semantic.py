"""Semantic global steps: semantic_dedup (SemDeDup), balance (semantic-balance sampling)."""
