"""The project's own errors. Each message names the flag or the file and says what is wrong, so that the
command-line tools can print it as one line (`error: ...`, exit status 2) instead of a traceback."""


class ErdaError(Exception):
    """Base of every error erda_sparse raises on purpose (bad input, bad data, a run that cannot go on)."""

    exit_status = 2


class UsageError(ErdaError, ValueError):
    """A flag or a path given on the command line that cannot be used."""


class TrainingError(ErdaError, RuntimeError):
    """A run that cannot go on (for instance a non-finite loss); the newest good checkpoint is kept."""

    exit_status = 1
