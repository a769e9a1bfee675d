"""Waiting on a condition with a deadline: the one way tests wait for another thread."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], timeout: float = 10.0,
               interval: float = 0.01) -> bool:
    """Poll `condition` until it is true or `timeout` seconds pass; return whether it became true.

    Use as ``assert wait_until(lambda: ..., 5)``: the outcome is decided by the condition, the
    timeout only bounds a failing test.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return bool(condition())
        time.sleep(interval)
    return True
