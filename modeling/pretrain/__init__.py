"""Continued MLM pretraining, phase after phase; see README.md."""
