"""Errors a user can act on.

Every error genzoo raises on bad input is a :class:`GenzooError` whose message is one
line naming the problem and the fix (the valid choices, the expected shape, the flag to
pass). The CLI prints that line and exits with code 2, never a traceback.
"""
from __future__ import annotations


class GenzooError(Exception):
    """Base class: a problem with the user's input, data, config or files."""


class ConfigError(GenzooError, ValueError):
    """Unknown model, unknown key, or a value of the wrong type/range."""


class DataError(GenzooError):
    """Missing, corrupt or wrongly shaped data."""


class CheckpointError(GenzooError):
    """A checkpoint that is missing, corrupt, or does not match the model."""


class TrainingDiverged(GenzooError):
    """The loss became NaN/inf or exploded; the last good checkpoint is kept."""


class Interrupted(GenzooError):
    """SIGINT / SIGTERM stopped a command; ``exit_code`` is 130 or 143 (128 + the signal)."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


def did_you_mean(name: str, choices) -> str:
    """Return ' (did you mean X?)' for the closest choice, or ''."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
