"""The one error type users see: a one-line message, exit code 2 at the CLI."""

from __future__ import annotations


class GenlabError(Exception):
    """A user-facing error: bad input, missing files, divergence. The CLI prints it on one line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # Keep it one line: the CLI contract is a single line on stderr.
        super().__init__(" ".join(str(message).split()))


class TrainingDiverged(GenlabError):
    """A loss or parameter became NaN/inf; the last good checkpoint is kept."""
