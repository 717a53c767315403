"""Progress bars for long conversion steps, written to stderr.

tqdm draws the bars when it is installed and stderr is a terminal. Otherwise
each step is logged once when it starts, which keeps logs of batch runs readable.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_enabled = True


def set_enabled(enabled: bool) -> None:
    """Turn the bars on or off for this process (``--no-progress``)."""
    global _enabled
    _enabled = enabled


def _tqdm():
    if not _enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


def track(items: Iterable[T], description: str, total: Optional[int] = None, unit: str = "it") -> Iterator[T]:
    """Yield from ``items`` while showing a bar labelled ``description``."""
    tqdm = _tqdm()
    if tqdm is None:
        logger.info("%s", description)
        yield from items
        return
    yield from tqdm(items, desc=description, total=total, unit=unit, leave=False, file=sys.stderr)


@contextmanager
def step(description: str) -> Iterator[None]:
    """Show an indeterminate bar (a spinner with elapsed time) for one long call."""
    tqdm = _tqdm()
    if tqdm is None:
        logger.info("%s", description)
        yield
        return
    with tqdm(total=1, desc=description, leave=False, file=sys.stderr, bar_format="{desc}: {elapsed}") as bar:
        yield
        bar.update(1)
