"""The interface through which ``Runner`` reports the progress of its capture loop.

The runner calls ``started()`` once the publisher runs, iterates the source
through ``frames()``, calls ``analyzed()`` after each analyzed frame and
``stopping()`` when the loop ends, before the last window is published and
the outbox is flushed. ``NullHooks`` does nothing and is the default.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Protocol, TypeVar

FrameT = TypeVar("FrameT")


class RunHooks(Protocol):
    """Callbacks of the capture loop. Each must return quickly and must not raise."""

    def started(self) -> None:
        """Called once before the first frame is read."""

    def frames(self, source: Iterable[FrameT]) -> Iterator[FrameT]:
        """Return the frames of ``source`` unchanged, calling the hook on every wait for a frame and every resume."""

    def analyzed(self, faces: int) -> None:
        """Called after each analyzed frame with the number of faces found in it."""

    def stopping(self, reason: str) -> None:
        """Called once when the loop ends, before the final window and the flush."""


class NullHooks:
    """Hooks that do nothing."""

    def started(self) -> None:
        pass

    def frames(self, source: Iterable[FrameT]) -> Iterator[FrameT]:
        return iter(source)

    def analyzed(self, faces: int) -> None:
        pass

    def stopping(self, reason: str) -> None:
        pass
