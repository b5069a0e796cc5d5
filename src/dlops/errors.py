"""Errors that mean "the input is wrong": reported as one message, without a traceback."""


class ConfigError(ValueError):
    """A bad config value, a missing file, or data that cannot be used; the message says how to fix it."""


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class Pruned(RuntimeError):
    """A hyperparameter search stopped this trial early: its results so far looked unpromising."""


class Interrupted(BaseException):
    """The run was stopped by SIGINT or SIGTERM at a safe point, after saving `last.ckpt`.

    A BaseException (like KeyboardInterrupt) so that no `except Exception` swallows it; Lightning
    lets it through after its own clean-up.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
