"""Shared machinery used by every lifecycle; see README.md."""
