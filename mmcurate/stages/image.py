"""Image stages: integrity, image_filter, exact_dedup, phash_dedup."""
