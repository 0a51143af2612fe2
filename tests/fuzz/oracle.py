"""The property every parser shares: an input either parses or is refused with the
package's own error type carrying a message; any other exception is a bug."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["noted", "parse_or_refuse"]


def parse_or_refuse(call: Callable[[], Any], errors: type[BaseException] | tuple[type[BaseException], ...]) -> Any:
    """``call()``'s result, or None when it raised one of ``errors`` with a message.

    numpy's RuntimeWarnings (a float cast that overflows to infinity) are ignored here as in
    production, where warnings are not errors; pytest's ``filterwarnings = error`` would
    otherwise turn them into exceptions no server ever sees."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            return call()
        except errors as exc:
            assert str(exc).strip(), f"{type(exc).__name__} raised without a message"
            return None


@contextmanager
def noted(what: str) -> Iterator[None]:
    """Name the input variant in a failure (a sweep runs many per Hypothesis example)."""
    try:
        yield
    except BaseException as exc:
        exc.add_note(f"input variant: {what}")
        raise
