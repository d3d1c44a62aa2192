"""Training progress that reads well both in a terminal and in a log file.

In a terminal: a tqdm bar (updated in place). Anywhere else (output redirected to a file, a CI
log, a subprocess pipe): one log line every ``every_seconds`` and at the end, with numbers
rounded, because a bar's carriage-return updates become thousands of lines in a file.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator, TextIO

log = logging.getLogger(__name__)

# What is being trained (a Kedro node's namespace, e.g. ``reward_bt``), set by the run's hook
# (prefalign.hooks.RunSummaryHooks) around each node, so progress lines say which model they are
# about: ``reward_bt train 484/600 (81%) ...``. Unset (a notebook, a test): no prefix.
_LABEL: ContextVar[str | None] = ContextVar("prefalign_progress_label", default=None)


def set_label(label: str | None) -> None:
    """Name what the following progress lines are about (None: no name).

    Args:
        label: the name (a node's namespace, e.g. ``reward_bt``); None or "" clears it.
    """
    _LABEL.set(label or None)


@contextmanager
def labelled(label: str | None) -> Iterator[None]:
    """Progress created inside the block is prefixed with ``label``.

    Args:
        label: the prefix (None or "": none).

    Yields:
        Nothing; the label is restored when the block ends.
    """
    token = _LABEL.set(label or None)
    try:
        yield
    finally:
        _LABEL.reset(token)


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: stderr, where tqdm writes) is an interactive terminal.

    Args:
        stream: the stream to test; None = ``sys.stderr``.

    Returns:
        True for an interactive terminal; False otherwise, or when the stream is closed or has no ``isatty``.
    """
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def rounded(value: Any, digits: int = 4) -> Any:
    """``value`` rounded to ``digits`` decimals when it is a float (for log lines); else unchanged.

    Args:
        value: any value.
        digits: decimals kept for floats.

    Returns:
        ``round(value, digits)`` for a float, the value itself otherwise.
    """
    return round(value, digits) if isinstance(value, float) else value


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def format_progress(desc: str, step: int, total: int, elapsed: float, steps_done: int, **values: float) -> str:
    """``train 120/600 (20%) loss=0.6931 tok_s=1234 elapsed 40s eta 2m40s``.

    Args:
        desc: what is progressing (``train``).
        step: steps done so far.
        total: the number of steps of the whole run.
        elapsed: seconds since this run (not a resumed one) started.
        steps_done: steps done in those seconds (for the ETA; excludes resumed steps).
        values: numbers shown with 4 significant digits.

    Returns:
        The line; the ETA is left out before the first step of this run and once ``step == total``.
    """
    parts = [f"{desc} {step}/{total} ({100 * step / max(total, 1):.0f}%)"]
    parts += [f"{key}={value:.4g}" for key, value in values.items() if value is not None]
    parts.append(f"elapsed {_duration(elapsed)}")
    if 0 < steps_done and step < total:
        parts.append(f"eta {_duration(elapsed / steps_done * (total - step))}")
    return " ".join(parts)


class Progress:
    """A bar in a terminal, periodic log lines elsewhere; the same three calls either way.

    Args:
        total: number of steps.
        initial: steps already done (a resumed run).
        desc: what progresses (``train``); prefixed by the label of ``labelled``/``set_label`` when one
            is set (``reward_bt train``).
        enabled: False shows nothing (e.g. non-main processes).
        every_seconds: the interval of log lines when not in a terminal.
        terminal: force bar (True) or lines (False); None asks ``is_terminal()``.
    """

    def __init__(self, total: int, initial: int = 0, desc: str = "train", enabled: bool = True,
                 every_seconds: float = 30.0, terminal: bool | None = None) -> None:
        label = _LABEL.get()
        desc = f"{label} {desc}" if label else desc
        self.total, self.step, self.desc, self.enabled = total, initial, desc, enabled
        self._initial, self._every = initial, every_seconds
        self._start = self._last = time.perf_counter()
        self._values: dict[str, float] = {}
        self._bar: Any = None
        if enabled and (is_terminal() if terminal is None else terminal):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc)

    def update(self, steps: int = 1, **values: float) -> None:
        """``steps`` more done; ``values`` (loss, tokens/s, ...) shown next to the count.

        Args:
            steps: steps completed since the last call.
            **values: numbers to show (None values are left out); replaces the previous ones.
        """
        self.step += steps
        self._values = values
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(steps)
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if v is not None})
            return
        now = time.perf_counter()
        if now - self._last >= self._every and self.step < self.total:
            self._last = now
            log.info(self._line())

    def close(self) -> None:
        """Ends the bar, or logs the final line."""
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self.step > self._initial:
            log.info(self._line())

    def _line(self) -> str:
        return format_progress(self.desc, self.step, self.total, time.perf_counter() - self._start,
                               self.step - self._initial, **self._values)
