"""A clock tests move: time-based rules (expiries, leases, grace periods, deadlines) tested without sleeping."""

from __future__ import annotations

from datetime import datetime, timedelta

from service.models.base import utcnow


class FakeClock:
    """The wall clock plus an offset that only `advance` changes.

    It keeps running like the real one, so a test that does not move it sees time as before (rows ordered by when
    they were written, claims that are fresh); `advance` jumps ahead at once instead of waiting for a rule's time.
    """

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds`."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self.offset += timedelta(seconds=seconds)
