"""The CLI's stop signals, in this process: SIGTERM raises KeyboardInterrupt once, a
repeat during the clean-up is ignored, and an interrupt Python dropped (raised inside a
``__del__``) is delivered again."""

import os
import signal
import time

import pytest

from shardmc.workflow.cli import REDELIVER_SECONDS, _StopSignals


class _SignalsInDel:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here: Python drops it


def test_sigterm_raises_once_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    stop, cleaned_up = _StopSignals(), []
    with pytest.raises(KeyboardInterrupt), stop:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:  # the clean-up: a second signal must not cut it short
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            cleaned_up.append(True)
    assert cleaned_up and stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_interrupt_dropped_in_del_is_raised_again():
    stop = _StopSignals()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt), stop:
        obj = _SignalsInDel()
        del obj
        time.sleep(5)
    assert time.monotonic() - t0 < 5 * REDELIVER_SECONDS + 2
    assert stop.signum == signal.SIGTERM
