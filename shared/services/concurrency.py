"""One bounded thread pool helper for per-file work (storage calls release the GIL while waiting)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

_In = TypeVar("_In")
_Out = TypeVar("_Out")


def parallel_map(work: Callable[[_In], _Out], items: list[_In], workers: int) -> list[_Out]:
    """``work`` over ``items`` in order, at most ``workers`` at a time; inline for a single item."""
    if len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(work, items))
