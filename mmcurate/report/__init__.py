"""Self-contained HTML quality report."""
