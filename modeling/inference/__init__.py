"""Embed or classify a file of notes in packed batches; see README.md.

from modeling.inference import NoteEncoder
embeddings, notes = NoteEncoder.from_pretrained("out/demo/phase2").encode(texts)
"""

from modeling.inference.encoder import NoteEncoder

__all__ = ["NoteEncoder"]
