"""The two kinds of error a user can fix, each worded as one line that names the culprit.

Every command catches them (modeling.common.cli) and prints `error: <line>` with exit code 2; anything
else is a bug in this project and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Something the user can fix, phrased as one line."""


class ConfigError(UserError):
    """A recipe, task config or command-line problem, phrased as one line that names the key."""


class DataError(UserError):
    """A problem with the user's data or files, phrased as one line naming the file and line or record."""
