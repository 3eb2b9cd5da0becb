"""Exceptions shared across the package (no heavy imports)."""


class CommandError(Exception):
    """A user-facing command-line error: printed as one line, exit status 2."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with a message that says why."""
