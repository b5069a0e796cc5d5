"""Errors that mean "the input is wrong": reported as one message, without a traceback."""


class ConfigError(ValueError):
    """A bad config value, a missing file, or data that cannot be used; the message says how to fix it."""


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class Interrupted(BaseException):
    """The run was stopped by SIGINT or SIGTERM at a safe point, after saving `last.ckpt`.

    A BaseException (like KeyboardInterrupt) so that no `except Exception` swallows it; Lightning
    lets it through after its own clean-up.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process ended by that signal (130, 143)."""
        return 128 + self.signum


class Pruned(Exception):
    """An Optuna trial stopped early because its monitored metric was unpromising: a search
    decision, recorded as status `pruned`, not an error."""
