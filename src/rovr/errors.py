"""User-facing errors: one clear line (what was wrong, where, what to do), no traceback."""


class RovrError(Exception):
    """An error caused by user input (a file, a config value, a missing stage).

    The CLI prints ``str(err)`` as one line and exits with status 2.
    """


class ConfigError(RovrError):
    """A configuration value or file is invalid."""


class DataError(RovrError):
    """A video, frame folder or mask cannot be used."""


class CheckpointError(RovrError):
    """A checkpoint is missing, corrupt, or from another configuration."""
