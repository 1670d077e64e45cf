"""CLIP stages: clip_embed (image and caption embeddings, CLIP score), clip_score_filter."""
