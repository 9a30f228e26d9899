"""Stopping a run without losing work. Batch schedulers, `timeout`, `docker stop` and Kubernetes
stop jobs with SIGTERM; people press Ctrl-C (SIGINT). The first of either asks the training loop
to finish the update under way, save a checkpoint and return; work that can be dropped without
loss (setting up, validating) is dropped at once. A second signal stops at once: checkpoints are
written atomically, so the last complete one stays intact.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """A run stopped by a signal before it could save: nothing was trained yet, or a second
    signal came. A BaseException, as KeyboardInterrupt: `except Exception` does not swallow it.

    Args:
        signum: The signal.
        message: What happened, for people.
        at_once: Stopped by a second signal, without finishing anything.
    """

    def __init__(self, signum: int, message: str = "", *, at_once: bool = False) -> None:
        super().__init__(message or f"stopped by {signal_name(signum)}")
        self.signum, self.message, self.at_once = signum, message, at_once

    @property
    def exit_code(self) -> int:
        """0 for a SIGTERM that lost nothing (the job was asked to stop and did), else the
        shell's 128 + signal number (130 for Ctrl-C)."""
        return 0 if self.signum == signal.SIGTERM and not self.at_once else 128 + self.signum


class Abandon(Stopped):
    """Raised by the first signal into work that may be dropped: the caller catches it."""


def signal_name(signum: int | None) -> str:
    return signal.Signals(signum).name if signum is not None else "a signal"


def stop_exit_code(signum: int | None) -> int:
    """Exit status of a run that stopped cleanly on `signum` (see `Stopped.exit_code`)."""
    return Stopped(signum or signal.SIGTERM).exit_code


class StopSignals:
    """SIGTERM/SIGINT handlers for the duration of a `with` block (main thread only; elsewhere
    nothing is installed and `requested` stays False).

    The first signal sets `signum` and, inside an `abandonable()` block, raises `Abandon`
    there; a second raises `Stopped(at_once=True)` wherever the program is.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._abandonable = False
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @contextmanager
    def abandonable(self) -> Iterator[None]:
        """Inside this block the first signal raises `Abandon` (at once if one came before)."""
        self._abandonable = True
        try:
            if self.signum is not None:
                raise Abandon(self.signum)
            yield
        finally:
            self._abandonable = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise Stopped(signum, f"a second {signal_name(signum)}: stopped at once", at_once=True)
        self.signum = signum
        if self._abandonable:
            self._abandonable = False
            raise Abandon(signum)
