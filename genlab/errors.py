"""The one error type users see: a one-line message, exit code 2 at the CLI."""

from __future__ import annotations


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when it has none), shortened:
    what a one-line message quotes of a library's error."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:limit]


class GenlabError(Exception):
    """A user-facing error: bad input, missing files, divergence. The CLI prints it on one line."""

    exit_code = 2
    label = "error"  # the CLI prints "genlab: <label>: <message>"

    def __init__(self, message: str) -> None:
        # Keep it one line: the CLI contract is a single line on stderr.
        super().__init__(" ".join(str(message).split()))


class TrainingDiverged(GenlabError):
    """A loss or parameter became NaN/inf; the last good checkpoint is kept."""


class TrainingStopped(GenlabError):
    """Training stopped by a signal (SIGTERM, SIGINT) after saving a checkpoint; the exit code is
    the shell's for that signal (143, 130), so schedulers and scripts see an unfinished run."""

    label = "stopped"

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)
