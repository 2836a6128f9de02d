"""SIGINT and SIGTERM, recorded instead of raised, while a run trains.

``with StopSignals() as signals:`` installs a handler that only notes the signal
(``signals.received``); the loop looks at it between steps, saves and stops, and the handlers that
were there before are restored on the way out.  Outside the main thread (where Python allows no
handler) signals are left alone.
"""
from __future__ import annotations

import signal


class StopSignals:
    def __init__(self, signals=(signal.SIGINT, signal.SIGTERM)):
        self.signals = tuple(signals)
        self.received = None            # the last signal that arrived inside ``with``
        self._previous = {}

    def _note(self, signum, frame):
        self.received = signum

    def __enter__(self) -> "StopSignals":
        self.received = None
        for sig in self.signals:
            try:
                self._previous[sig] = signal.signal(sig, self._note)
            except ValueError:          # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        return False
