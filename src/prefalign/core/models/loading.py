"""One model construction at a time per process.

transformers builds and loads models under process-wide patches: ``from_pretrained`` swaps
``PreTrainedModel.tie_weights`` for a no-op while it instantiates (``initialization.no_tie_weights``)
and both ``from_pretrained`` and ``from_config`` set torch's default dtype (``local_torch_dtype``).
Two threads inside them at once (kedro's ThreadRunner, a test driving two launchers) can restore
each other's patch: the no-op then stays for the rest of the process, and every model built later
has an untied ``lm_head`` (left on the meta device when it is loaded from a checkpoint). Random
initialisation also reads the global torch RNG after ``torch.manual_seed``. Every place this
project builds or loads a transformers model therefore holds ``MODEL_CONSTRUCTION_LOCK``.
"""

from __future__ import annotations

import functools
import threading
from typing import Callable, TypeVar

# Re-entrant: loading a reward model loads its backbone (and a LoRA checkpoint its base) inside.
MODEL_CONSTRUCTION_LOCK = threading.RLock()

F = TypeVar("F", bound=Callable)


def one_construction_at_a_time(function: F) -> F:
    """Decorate a function that builds or loads transformers models so it holds ``MODEL_CONSTRUCTION_LOCK``.

    Args:
        function: any callable; its arguments and result pass through unchanged.

    Returns:
        The wrapped callable. Calls from other threads wait; nested calls in one thread do not.
    """

    @functools.wraps(function)
    def locked(*args, **kwargs):
        with MODEL_CONSTRUCTION_LOCK:
            return function(*args, **kwargs)

    return locked  # type: ignore[return-value]
