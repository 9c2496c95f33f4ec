"""Errors a user can fix: the CLI prints them as one message, without a traceback."""


class DataError(ValueError):
    """Bad input data; the message names the file and what is wrong with it."""


class ModelNotFoundError(FileNotFoundError):
    """A model that must be downloaded by hand on a machine with internet access."""


class ConfigError(ValueError):
    """A configuration that cannot work (unknown injector, duplicate strategy names, ...)."""


USER_ERRORS = (DataError, ModelNotFoundError, ConfigError)
