"""Readers and writers: WebDataset shards, image folders with captions, LLaVA JSON; atomic writes."""
