"""Rich log output in a terminal, plain unwrapped lines everywhere else (a file, CI, a pipe).

Rich lays a record out at the terminal width, and with no terminal at 80 columns, padding every
line with spaces and breaking long ones (report paths, the node summary) in the middle of a word.
conf/logging.yml therefore configures a plain ``logging.StreamHandler``, which is right for a file
from the first line on; ``rich_logging_in_terminal`` (called once by settings.py) swaps it for
kedro's ``RichHandler`` when its stream is a terminal. (Kedro's logging config only accepts
handler classes from ``logging`` and ``kedro.logging``, so the choice is made here, in code.)
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import TextIO

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Warnings a run cannot act on, dropped from the log: mlflow (imported by kedro-mlflow) warns about
# type hints of its own pyfunc model class, in colour codes, and installs a filter of its own that
# would override a warnings.filterwarnings ignore.
NOISE = ("Add type hints to the `predict` method",)


class PlainText(logging.Filter):
    """Strips ANSI colour codes (``\\x1b[33m``) from a record's message, which a file or a CI log
    would show as escape characters, and drops the known noise warnings (``NOISE``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(noise in message for noise in NOISE):
            return False
        plain = _ANSI.sub("", message)
        if plain != message:
            record.msg, record.args = plain, None
        return True


def is_terminal(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def rich_logging_in_terminal(logger: logging.Logger | None = None) -> int:
    """Replace each plain console handler of ``logger`` (default: the root logger) that writes to
    a terminal by kedro's ``RichHandler`` (same level); leave file and pipe output plain.

    A plain handler (not a terminal) gets the ``PlainText`` filter: no colour codes, no noise.
    Also: warnings go to logging in both cases, and the Hugging Face progress bars (carriage-return
    updates such as "Writing model shards") are turned off when stderr is not a terminal.

    Args:
        logger: the logger whose handlers are checked; None is the root logger.

    Returns:
        How many handlers were replaced (0 when the output is not a terminal).
    """
    logging.captureWarnings(True)
    if not is_terminal(sys.stderr):
        # both libraries read this variable when first imported, which is after settings.py
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logger = logger or logging.getLogger()
    replaced = 0
    for handler in list(logger.handlers):
        if type(handler) is logging.StreamHandler and not is_terminal(handler.stream):
            if not any(isinstance(f, PlainText) for f in handler.filters):
                handler.addFilter(PlainText())
            continue
        if type(handler) is not logging.StreamHandler:
            continue
        from kedro.logging import RichHandler

        rich = RichHandler(rich_tracebacks=True, show_path=False)  # node summary lines are long
        rich.setLevel(handler.level)
        for log_filter in handler.filters:
            rich.addFilter(log_filter)
        logger.removeHandler(handler)
        logger.addHandler(rich)
        replaced += 1
    return replaced
