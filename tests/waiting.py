"""The one way the tests wait for something to happen: poll, bounded, and say what did not come."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(
    cond: Callable[[], Any],
    timeout_s: float = 5.0,
    what: str = "condition",
    *,
    each: Callable[[], object] | None = None,
    period_s: float = 0.005,
) -> Any:
    """Poll ``cond`` until it returns something truthy and return that; AssertionError naming
    ``what`` once ``timeout_s`` has passed (``cond`` is always asked once more at the deadline, so a
    late process wake-up on a loaded machine does not turn a met condition into a failure).

    ``each`` runs before every poll: a device handle's ``check`` (a dead or faulted device then fails
    the wait at once, with its own error), or whatever must keep beating meanwhile."""
    deadline = time.monotonic() + timeout_s
    while True:
        if each is not None:
            each()
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for: {what}")
        time.sleep(period_s)
