"""Fixtures shared by every test module; the helpers themselves live in helpers.py."""

import os
import signal

import pytest
from helpers import STARTED


@pytest.fixture(autouse=True)
def _end_started_runs():
    """A test that fails half-way leaves no training process behind."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        process.output.close()
