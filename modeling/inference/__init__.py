"""Embed or classify a file of notes in packed batches; see README.md."""
