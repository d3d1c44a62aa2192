"""Models built or loaded from two threads at once stay tied and in their own dtype.

transformers patches ``PreTrainedModel.tie_weights`` and torch's default dtype process-wide while
it builds a model (core/models/loading.py). Two threads loading at once (kedro's ThreadRunner, the
two-machine test) used to leave the no-op ``tie_weights`` installed: every later model in the
process had an untied ``lm_head`` (CI, stop 26: three tests failed after the two-machine test).
"""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import PreTrainedModel

from prefalign.core.models import build_causal_lm, build_tokenizer
from prefalign.core.models.checkpoint import ModelBundle, load_bundle, save_bundle

TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}
TRIALS = 12  # without the lock the patch leaked within 3-4 trials here


def _in_two_threads(work) -> list:
    """Run ``work(i)`` for i = 0, 1 in two threads released together; their results, errors re-raised."""
    barrier, results, errors = threading.Barrier(2), [None, None], []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except Exception as error:  # noqa: BLE001 (re-raised in the test's thread)
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return results


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer({"vocab_size": 300}, ["a question about rivers", "an answer about lakes"])


def test_checkpoints_loaded_in_two_threads_stay_tied(tok, tmp_path):
    original = PreTrainedModel.tie_weights
    save_bundle(ModelBundle(model=build_causal_lm(TINY, tok), tokenizer=tok, metadata={}), tmp_path / "policy")
    for _ in range(TRIALS):
        for bundle in _in_two_threads(lambda i: load_bundle(tmp_path / "policy")):
            assert bundle.model.lm_head.weight is bundle.model.model.embed_tokens.weight
        assert PreTrainedModel.tie_weights is original
    fresh = build_causal_lm(TINY, tok)
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight


def test_models_built_in_two_threads_get_their_own_dtype(tok):
    dtypes = ("bfloat16", "float32")
    for _ in range(TRIALS):
        models = _in_two_threads(lambda i: build_causal_lm({**TINY, "dtype": dtypes[i]}, tok))
        assert [next(m.parameters()).dtype for m in models] == [torch.bfloat16, torch.float32]
        assert torch.get_default_dtype() == torch.float32
