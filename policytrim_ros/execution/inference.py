"""Inference off the caller's thread: one call at a time on a daemon thread.

policy_node's executor thread runs every callback (events, joint states, the hold, shutdown); a
model call there would hold all of them for its whole latency, and a hung model forever. Here the
call runs on its own thread; the caller polls ``take()`` when ``on_done`` tells it a call ended,
and can see how long the call in flight has run (``running_for``) to give up on it. A hung call is
never killed (Python cannot); its thread is a daemon, so it does not keep the process alive.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class InferenceResult:
    """A finished call: its ``tag``, its return value or the exception it raised, and its seconds."""

    tag: Any
    value: Any = None
    error: BaseException | None = None
    seconds: float = 0.0


class InferenceThread:
    """Runs ``submit``ted calls one at a time on a daemon thread; ``on_done()`` after each (on that thread)."""

    def __init__(self, on_done: Callable[[], None], name: str = 'inference'):
        self._on_done = on_done
        self._cv = threading.Condition()
        self._job: tuple[Any, Callable[[], Any]] | None = None
        self._started_at: float | None = None   # monotonic start of the call in flight
        self._result: InferenceResult | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A call is queued or running (a new one cannot be submitted)."""
        with self._cv:
            return self._job is not None or self._started_at is not None

    def running_for(self) -> float | None:
        """Seconds the call in flight has run, or None when none runs."""
        with self._cv:
            return None if self._started_at is None else time.monotonic() - self._started_at

    def submit(self, tag, call: Callable[[], Any]) -> None:
        """Run ``call()`` on the thread; ``take()`` returns it with ``tag`` once it ends."""
        with self._cv:
            if self._job is not None or self._started_at is not None:
                raise RuntimeError('an inference call is already in flight')
            self._result = None
            self._job = (tag, call)
            self._cv.notify()

    def take(self) -> InferenceResult | None:
        """The finished call's result (once), or None."""
        with self._cv:
            result, self._result = self._result, None
            return result

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._job is None:
                    self._cv.wait()
                (tag, call), self._job = self._job, None
                self._started_at = started = time.monotonic()
            try:
                result = InferenceResult(tag, value=call(), seconds=time.monotonic() - started)
            except BaseException as err:  # noqa: BLE001 (handed to the caller, who ends the episode)
                result = InferenceResult(tag, error=err, seconds=time.monotonic() - started)
            with self._cv:
                self._result, self._started_at = result, None
            try:
                self._on_done()
            except Exception:  # noqa: BLE001 (the node went away while the call ran: nobody to tell)
                pass
