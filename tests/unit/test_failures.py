"""dlops.lifecycle.failures: how each kind of failure ends a run, decided without running one."""

import errno
import signal

import pytest
from hydra.errors import InstantiationException

from dlops.errors import ConfigError, DivergedError, Interrupted, Pruned
from dlops.lifecycle.failures import decide, user_message


def raised_from(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as exc:  # noqa: BLE001
        return exc


@pytest.mark.parametrize("multirun,exit_code", [(False, 1), (True, None)])
def test_a_bad_input_fails_with_its_message_exiting_alone_or_going_on_in_a_sweep(multirun, exit_code):
    decision = decide(ConfigError("datamodule.root is not set"), None, multirun, full_error=False)
    assert (decision.status, decision.message, decision.exit_code) == (
        "failed", "datamodule.root is not set", exit_code)


def test_an_interrupt_stops_even_a_sweep_with_128_plus_the_signal():
    decision = decide(Interrupted(signal.SIGTERM), None, multirun=True, full_error=True)
    assert (decision.status, decision.exit_code, decision.reraise) == ("interrupted", 143, False)
    assert "SIGTERM at a safe point" in decision.message
    repeated = decide(KeyboardInterrupt(), None, multirun=False, full_error=False)
    assert repeated.exit_code == 130 and "repeated SIGINT" in repeated.message
    assert decide(SystemExit(1), signal.SIGTERM, False, False).status == "interrupted"


def test_divergence_and_pruning_are_outcomes_of_their_own_even_when_wrapped():
    wrapped = raised_from(RuntimeError("in a hook"), DivergedError("training loss is nan"))
    assert decide(wrapped, None, True, False).status == "diverged"
    assert decide(Pruned("trial 3 pruned at epoch 2"), None, True, False).status == "pruned"


def test_messages_name_the_cause_and_a_bug_has_none():
    from_resolver = raised_from(InstantiationException("Error in call to target"),
                                ConfigError("${data:features}: no attribute"))
    assert user_message(from_resolver) == "${data:features}: no attribute"
    full = OSError(errno.ENOSPC, "No space left on device", "/runs/x/summary.json")
    assert "while writing /runs/x/summary.json" in user_message(full)
    assert user_message(InstantiationException("Error in call to target 'mine.X'")).startswith(
        "the config could not be instantiated: Error in call to target 'mine.X'")
    assert user_message(ZeroDivisionError("division by zero")) is None
    assert decide(ZeroDivisionError(), None, False, full_error=True).reraise
