"""Errors a user can fix: the CLI prints them as one message, without a traceback; and the
stop a signal asks for."""

import signal


class DataError(ValueError):
    """Bad input data; the message names the file and what is wrong with it."""


class ModelNotFoundError(FileNotFoundError):
    """A model that must be downloaded by hand on a machine with internet access."""


class ConfigError(ValueError):
    """A configuration that cannot work (unknown injector, duplicate strategy names, ...)."""


class RunFolderError(ConfigError):
    """An output folder that cannot take this run (another configuration, locked, not writable)."""


class RecordError(DataError):
    """A per-sample record on disk that cannot be read back."""


class NoSpaceError(OSError):
    """The disk of the output folder is full (or over quota); what was written stays whole."""


USER_ERRORS = (DataError, ModelNotFoundError, ConfigError, NoSpaceError)


class RunStopped(Exception):
    """The run stopped on a signal; the exit code is the shell's 128 + signal number."""

    def __init__(self, signum: int, progress: str = "") -> None:
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name}" + (f": {progress}" if progress else "")
                         + "; run the same command again to resume")  # fmt: skip

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
