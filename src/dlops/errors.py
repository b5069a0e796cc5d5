"""Errors that mean "the input is wrong": reported as one message, without a traceback."""


class ConfigError(ValueError):
    """A bad config value, a missing file, or data that cannot be used; the message says how to fix it."""


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""
