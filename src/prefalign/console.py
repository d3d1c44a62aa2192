"""Plain log lines when the output is not a terminal (a file, a CI log, a pipe).

Rich wraps at the terminal width, and with no terminal at 80 columns, padding every line with
spaces and breaking long ones (report paths, the node summary) in the middle of a word. Kedro's
logging config only accepts handler classes from ``logging`` and ``kedro.logging``, so
conf/logging.yml keeps kedro's RichHandler and settings.py calls ``plain_logging_unless_terminal``
once: in a terminal nothing changes, elsewhere each rich handler becomes a plain
``logging.StreamHandler`` on the same stream, one unwrapped line per record.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PLAIN_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def plain_logging_unless_terminal(logger: logging.Logger | None = None) -> int:
    """Replace each rich handler of ``logger`` (default: the root logger) whose console is not a
    terminal by a plain ``StreamHandler`` with the same level and stream.

    Args:
        logger: the logger whose handlers are checked; None is the root logger.

    Also turns off the Hugging Face progress bars when stderr is not a terminal.

    Returns:
        How many handlers were replaced (0 in a terminal).
    """
    from rich.logging import RichHandler

    if not is_terminal(sys.stderr):
        # transformers/huggingface_hub bars ("Writing model shards") are carriage-return updates;
        # both read this variable when first imported, which is after settings.py.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logger = logger or logging.getLogger()
    replaced = 0
    for handler in list(logger.handlers):
        if not isinstance(handler, RichHandler):
            continue
        stream = handler.console.file
        if is_terminal(stream):
            continue
        plain = logging.StreamHandler(stream)
        plain.setLevel(handler.level)
        plain.setFormatter(logging.Formatter(PLAIN_FORMAT, PLAIN_DATE_FORMAT))
        for log_filter in handler.filters:
            plain.addFilter(log_filter)
        logger.removeHandler(handler)
        logger.addHandler(plain)
        replaced += 1
    return replaced
