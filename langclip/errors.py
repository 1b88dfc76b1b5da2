"""The errors langclip raises for bad input: each message names the offender (file, row, column, key) and the fix.

`langclip <command>` and ``train.py`` print a `LangclipError`'s message without a traceback
(``--debug`` shows it). Each class also derives from the built-in error a caller would catch
(``ValueError``), so ``except ValueError`` keeps working. This module imports nothing from
langclip, so every layer may raise these.
"""


class LangclipError(Exception):
    """Base class: the message says what is wrong, where (file, row, column, key), and how to fix it."""


class ConfigError(LangclipError, ValueError):
    """A flag, YAML key, config value or output folder is invalid."""


class DataError(LangclipError, ValueError):
    """Input data cannot be used: an unreadable file, an empty dataset, a missing column, a bad row."""


class CheckpointError(LangclipError, ValueError):
    """A checkpoint cannot be read (safely), or a resume does not match the run it continues."""


class HubUnreachableError(LangclipError, ConnectionError):
    """The Hugging Face Hub (or the ``HF_ENDPOINT`` mirror) cannot be reached."""


def check_at_least_one(flags, *names: str) -> None:
    """A `ConfigError` naming the first of ``names`` (attributes of ``flags``: parsed arguments or a dataclass, spelt
    as flags ``--a-name``) whose value is below 1; a None value is an unset flag."""
    for name in names:
        value = getattr(flags, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


class IncompleteJobError(LangclipError, RuntimeError):
    """A generation job ended with rows pending (requests that failed after retries): its state is saved and
    rerunning the same command redoes only those rows."""


class RunInterrupted(LangclipError):
    """A run stopped by a signal after saving its state; ``exit_code`` is 128 + the signal's number; ``quiet``: not
    printed (the other processes of a multi-process run, whose main process says it)."""

    def __init__(self, message: str, exit_code: int, quiet: bool = False):
        super().__init__(message)
        self.exit_code = exit_code
        self.quiet = quiet


__all__ = ["CheckpointError", "ConfigError", "DataError", "HubUnreachableError", "IncompleteJobError",
           "LangclipError", "RunInterrupted", "check_at_least_one"]
