"""The on-disk token cache (core/training/token_cache.py): the same ids, batches and losses as
tokenising in memory; one folder per (tokenizer, lengths, pairs); resume lands on the same batch."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from prefalign.core.training.batching import (
    SequenceView,
    TokenizedPairs,
    make_pair_batches,
    padding_fraction,
    tokenize_pair_frame,
)
from prefalign.core.training.loop import latest_checkpoint
from prefalign.core.training.packing import make_packed_pair_batches, packed_padding_fraction
from prefalign.core.training.token_cache import (
    build_token_cache,
    cached_tokenize_pair_frame,
    open_token_cache,
)
from tests.reward.helpers import TINY_MODEL, toy_pairs_frame, toy_tokenizer
from tests.reward.offline_tokenizers import chatml_tokenizer


def _frame(n_train: int = 40, n_val: int = 8) -> pl.DataFrame:
    return toy_pairs_frame(n_train, n_val)


def _chat_frame() -> pl.DataFrame:
    """Rows with and without chat turns, long enough that some prompts and responses are cut."""
    rows = []
    for i in range(11):
        turns = None if i % 3 == 0 else [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"q{i} " * (i + 1)}]
        rows.append({"prompt": f"q{i} " * (i + 1), "chosen": "yes " * (3 * i + 1), "rejected": "no " * (i % 4 + 1),
                     "p_chosen": 0.5 + i / 40, "margin": None if i % 2 else float(i), "prompt_messages": turns})
    rows.append({**rows[1], "chosen": rows[1]["rejected"]})  # a pair identical after tokenisation
    return pl.DataFrame(rows)


def _same_pairs(a, b) -> None:
    assert len(a) == len(b)
    assert [s.input_ids for s in a.chosen] == [s.input_ids for s in b.chosen]
    assert [s.input_ids for s in a.rejected] == [s.input_ids for s in b.rejected]
    assert [s.prompt_length for s in a.chosen] == [s.prompt_length for s in b.chosen]
    assert [s.prompt_length for s in a.rejected] == [s.prompt_length for s in b.rejected]
    for name in ("p_chosen", "margin", "identical"):  # NaNs included; cached: read from disk
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), name
    assert np.array_equal(np.asarray(a.pair_truncation), np.asarray(b.pair_truncation))  # the cache stores int32
    assert a.truncation == b.truncation


@pytest.mark.parametrize("which", ["bpe", "chatml"])
@pytest.mark.parametrize("lazy", [False, True])
def test_cached_pairs_equal_the_in_memory_ones_chunk_by_chunk(tmp_path: Path, which: str, lazy: bool):
    if which == "bpe":
        frame, tok, lengths = _frame(), toy_tokenizer(), (24, 8)
    else:  # chat template; the keep_first of the table's first row holds in every chunk
        frame, tok, lengths = _chat_frame(), chatml_tokenizer(), (30, 10)
    memory = tokenize_pair_frame(tok, frame, *lengths)
    assert memory.truncation.truncated_prompts > 0 and memory.truncation.truncated_responses > 0  # truncation exercised
    source = frame.lazy() if lazy else frame
    cached = open_token_cache(build_token_cache(tok, source, *lengths, tmp_path, chunk_rows=3))
    assert isinstance(cached.chosen, SequenceView)
    _same_pairs(cached, memory)
    # subset, repeat and without_identical stay views and equal the in-memory results, counts included
    index = np.array([5, 0, 0, 7, 3, 5])
    _same_pairs(cached.repeat(index), memory.repeat(index))
    _same_pairs(cached.without_identical(), memory.without_identical())
    _same_pairs(cached.without_identical().repeat([1, 1, 0]), memory.without_identical().repeat([1, 1, 0]))
    assert isinstance(cached.repeat(index).chosen, SequenceView)


def test_padded_and_packed_batches_equal_and_padding_from_lengths_is_exact(tmp_path: Path):
    frame, tok = _frame(), toy_tokenizer()
    memory = tokenize_pair_frame(tok, frame, 24, 8)
    cached = cached_tokenize_pair_frame(tok, frame, 24, 8, tmp_path)
    for seed in (None, 0, 3):
        a, b = make_pair_batches(memory, 6, tok.pad_token_id, seed), make_pair_batches(cached, 6, tok.pad_token_id, seed)
        assert len(a) == len(b) == 8
        for x, y in zip(a, b):
            for name in ("input_ids", "attention_mask", "response_mask", "last_prompt_index", "last_index"):
                assert torch.equal(getattr(x.sequences, name), getattr(y.sequences, name)), name
            assert torch.equal(x.p_chosen, y.p_chosen) and torch.equal(x.pair_index, y.pair_index)
            assert torch.equal(x.margin.isnan(), y.margin.isnan())
        # from the lengths, without collating: the same float as summing the collated masks
        collated = [x.sequences for x in a]
        by_hand = 1.0 - sum(int(s.attention_mask.sum()) for s in collated) / sum(s.attention_mask.numel() for s in collated)
        assert padding_fraction(b) == padding_fraction(a) == by_hand > 0
        packed_a = make_packed_pair_batches(memory, 6, tok.pad_token_id, seed, share_prompt=True)
        packed_b = make_packed_pair_batches(cached, 6, tok.pad_token_id, seed, share_prompt=True)
        for x, y in zip(packed_a, packed_b):
            assert torch.equal(x.sequences.input_ids, y.sequences.input_ids)
            assert torch.equal(x.sequences.position_ids, y.sequences.position_ids)
        # rows as wide as their segments: no padding; the shortcut agrees with summing the packed rows
        assert packed_padding_fraction(packed_b) == packed_padding_fraction(list(packed_a)) == 0.0
        assert len(packed_b._packed) == 0  # cache-backed batches are packed when read and not kept


def _folders(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.name.startswith("pairs_")}


def test_one_folder_per_tokenizer_lengths_and_pairs(tmp_path: Path):
    frame, tok = _frame(), toy_tokenizer()
    first = build_token_cache(tok, frame, 24, 8, tmp_path)
    stamp = (first / "tokens.int32").stat().st_mtime_ns
    assert build_token_cache(tok, frame, 24, 8, tmp_path) == first  # same inputs: reused, not rebuilt
    assert build_token_cache(tok, frame.lazy(), 24, 8, tmp_path) == first  # a lazy table of the same rows too
    assert (first / "tokens.int32").stat().st_mtime_ns == stamp
    seen = {first}
    # each change gives a new folder whose contents equal tokenising in memory with the change
    other_tok = toy_tokenizer(frame["chosen"].to_list())  # another vocabulary
    changed_text = frame.with_columns(pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("awful rude")).otherwise(pl.col("rejected")).alias("rejected"))
    changed_p = frame.with_columns((pl.col("p_chosen") * 0.5).alias("p_chosen"))
    for t, f, lengths in ((other_tok, frame, (24, 8)), (tok, frame, (30, 8)), (tok, frame, (24, 6)),
                          (tok, changed_text, (24, 8)), (tok, changed_p, (24, 8))):
        folder = build_token_cache(t, f, *lengths, tmp_path)
        assert folder not in seen
        seen.add(folder)
        _same_pairs(open_token_cache(folder), tokenize_pair_frame(t, f, *lengths))
    assert _folders(tmp_path) == {p.name for p in seen}
    meta = json.loads((first / "meta.json").read_text())
    assert meta["pairs_count"] == frame.height and meta["max_length"] == 24


def test_a_chat_template_change_is_a_new_cache(tmp_path: Path):
    frame = _chat_frame()
    tok = chatml_tokenizer()
    a = build_token_cache(tok, frame, 30, 10, tmp_path)
    tok.chat_template = tok.chat_template.replace("<|im_start|>", "<|im_start|> ")
    b = build_token_cache(tok, frame, 30, 10, tmp_path)
    assert a != b
    _same_pairs(open_token_cache(b), tokenize_pair_frame(tok, frame, 30, 10))


def test_an_unfinished_build_is_never_read(tmp_path: Path):
    frame, tok = _frame(), toy_tokenizer()
    folder = build_token_cache(tok, frame, 24, 8, tmp_path)
    (folder / "meta.json").unlink()  # as if the build had died before its last write
    with pytest.raises(FileNotFoundError, match="not a complete token cache"):
        open_token_cache(folder)
    with pytest.raises(ValueError, match="lazy pairs table needs a token cache_dir"):
        cached_tokenize_pair_frame(tok, frame.lazy(), 24, 8, None)


# -- training: bit-identical losses, and resume from the exact position -------------------------------------------

RUN = {"max_length": 48, "max_prompt_length": 16, "batch_size": 8, "eval_batch_size": 16, "train_accuracy_pairs": 16,
       "tokenizer": {"vocab_size": 300}}


def _reward_run(tmp_path: Path, cache: bool, name: str, training: dict, fail_after: int | None = None):
    from prefalign.core.reward.train_reward import RewardParams, fit_tokenizer, train_reward_model

    frame = _frame(48, 16)
    train, val = frame.filter(pl.col("split") == "train"), frame.filter(pl.col("split") == "val")
    params = RewardParams.from_dict({**RUN, "model": TINY_MODEL, "training": training,
                                     "token_cache_dir": str(tmp_path / "cache") if cache else None})
    return train_reward_model(train, val, fit_tokenizer(train, params), params, tmp_path / name, "bt")


REWARD_TRAINING = {"max_steps": 9, "learning_rate": 3e-3, "eval_every": 3, "progress_bar": False, "seed": 4,
                   "gradient_accumulation_steps": 1, "packing": False, "share_prompt": False}  # padded PairBatches


@pytest.mark.parametrize("packing", [False, True])
def test_reward_bt_losses_with_the_cache_equal_without(tmp_path: Path, packing: bool):
    training = {**REWARD_TRAINING, "packing": packing, "share_prompt": packing}
    plain = _reward_run(tmp_path, False, "plain", training)
    cached = _reward_run(tmp_path, True, "cached", training)
    timing = [c for c in plain.training_curve.columns if "per_second" in c]
    assert cached.training_curve.drop(timing).equals(plain.training_curve.drop(timing))  # bit-identical
    for key in ("val_loss", "val_accuracy", "train_accuracy", "truncation", "train_padding_fraction", "excluded_pairs"):
        assert cached.metrics[key] == plain.metrics[key], key
    assert _folders(tmp_path / "cache")  # the cached run did read from the cache


def test_a_resumed_cached_run_continues_at_the_same_batch(tmp_path: Path, monkeypatch):
    from prefalign.core.training import loop

    training = {**REWARD_TRAINING, "checkpoint_every": 4, "keep_checkpoints": 1}
    full = _reward_run(tmp_path, True, "full", training)

    real_save, calls = loop.save_checkpoint, {"n": 0}

    class Killed(Exception):
        pass

    def save_then_die(*args, **kwargs):  # the process dies right after the step-4 checkpoint (before step 5)
        path = real_save(*args, **kwargs)
        raise Killed(path)

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        _reward_run(tmp_path, True, "killed", training)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    assert latest_checkpoint(tmp_path / "killed").name == "step_00000004"
    resumed = _reward_run(tmp_path, True, "killed", training)  # a new process: reopens the same cache folder
    assert resumed.metrics["resumed_from_step"] == 4 and resumed.metrics["steps"] == 9
    timing = [c for c in full.training_curve.columns if "per_second" in c]
    assert resumed.training_curve.drop(timing).equals(full.training_curve.drop(timing))
    assert resumed.metrics["val_loss"] == full.metrics["val_loss"]
    assert len(_folders(tmp_path / "cache")) == 2  # train and val tables, built once for all three runs


def test_pairwise_policy_losses_with_the_cache_equal_without(tmp_path: Path):
    from prefalign.core.models import build_causal_lm, build_tokenizer
    from prefalign.core.models.checkpoint import ModelBundle
    from prefalign.core.objectives import registry
    from prefalign.core.policy.train_policy import PolicyDataConfig, reference_logprobs, train_preference
    from prefalign.core.training.loop import TrainConfig
    from tests.policy.conftest import TINY_MODEL as POLICY_MODEL, make_pairs

    pairs = make_pairs()
    texts = pairs["prompt"].to_list() + pairs["chosen"].to_list() + pairs["rejected"].to_list()
    spec = registry.get("policy_dpo")
    training = TrainConfig(max_steps=6, learning_rate=3e-3, eval_every=2, checkpoint_every=0, progress_bar=False,
                           lr_schedule="constant")
    runs = {}
    for cache in (None, str(tmp_path / "cache")):
        tok = build_tokenizer({"vocab_size": 300}, texts)
        reference = ModelBundle(build_causal_lm(POLICY_MODEL, tok), tok)
        data = PolicyDataConfig(max_length=40, max_prompt_length=16, batch_size=4, eval_batch_size=8, token_cache_dir=cache)
        table = reference_logprobs(reference, pairs, data, training)
        runs[cache is None] = (table, train_preference(reference, pairs, table, spec, spec.parse({"beta": 0.5}), data,
                                                       training, tmp_path / f"work_{cache is None}"))
    (table_a, a), (table_b, b) = runs[True], runs[False]
    assert table_a.equals(table_b)
    timing = [c for c in a.training_curve.columns if "per_second" in c]
    assert a.training_curve.drop(timing).equals(b.training_curve.drop(timing))
    assert a.metrics["policy"] == b.metrics["policy"] and a.metrics["excluded_pairs"] == b.metrics["excluded_pairs"]
    assert _folders(tmp_path / "cache")


# -- what a cached run keeps in memory per pair ----------------------------------------------------------------------

def _synthetic_cache(root: Path, n: int, seed: int = 0) -> Path:
    """A cache folder of ``n`` pairs written directly in the cache's format (random ids and lengths,
    1 pair in 50 identical), so a table of 10^5 pairs costs no tokenising."""
    from prefalign.core.training import token_cache as tc

    rng = np.random.default_rng(seed)
    folder = root / "pairs_synthetic"
    folder.mkdir(parents=True)
    lengths = rng.integers(3, 40, 2 * n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    counts = np.zeros((n, len(tc._STATS_FIELDS)), dtype=np.int32)
    counts[:, 0] = 2
    arrays = {"tokens": rng.integers(0, 300, offsets[-1]), "offsets": offsets, "prompt_lengths": np.minimum(lengths - 1, 5),
              "p_chosen": rng.choice([1.0, 0.75], n), "margin": np.where(rng.random(n) < 0.3, np.nan, rng.random(n)),
              "identical": (np.arange(n) % 50 == 7), "pair_truncation": counts}
    for name, values in arrays.items():
        np.asarray(values, dtype=tc._FILES[name]).tofile(tc._file(folder, name))
    truncation = {f: int(counts[:, i].sum()) for i, f in enumerate(tc._STATS_FIELDS)}
    (folder / tc.META).write_text(json.dumps({"format": tc.CACHE_FORMAT, "pairs_count": n, "tokens_count": int(offsets[-1]),
                                              "stats_fields": tc._STATS_FIELDS, "truncation": truncation}))
    return folder


def _resident(obj) -> tuple[int, int]:
    """(bytes of the numpy arrays, bytes of the Python objects) reachable from ``obj`` through
    prefalign objects' attributes, lists, tuples and dicts, each object counted once."""
    import sys

    seen, arrays, objects, todo = set(), 0, 0, [obj]
    while todo:
        item = todo.pop()
        if id(item) in seen or item is None or isinstance(item, (type, np.dtype, str)):
            continue
        seen.add(id(item))
        if isinstance(item, np.ndarray):
            arrays += item.nbytes
            continue
        objects += sys.getsizeof(item)
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, (list, tuple)):
            todo.extend(item)
        elif type(item).__module__.startswith("prefalign"):
            todo.extend(vars(item).values())
    return arrays, objects


def test_a_cached_table_keeps_only_its_batch_order_in_memory(tmp_path: Path):
    """Per pair, a cached run holds its batch order (int32) and, for the pairs it drops, their
    positions (one index shared by every column): no lengths, p_chosen, margin, identical or counts,
    no object per batch."""
    from prefalign.core.training.batching import BatchIndex, KeptRows, PairValues

    n = 100_000
    opened = open_token_cache(_synthetic_cache(tmp_path, n))
    assert _resident(opened)[0] == 0  # nothing per pair is read into memory by opening
    assert _resident(opened)[1] < 10_000
    assert isinstance(opened.p_chosen, PairValues) and isinstance(opened.margin, PairValues)
    train = opened.without_identical()
    m = n - n // 50
    assert len(train) == m
    rows = train.chosen.rows
    assert isinstance(rows, KeptRows) and rows.dtype == np.int32 and len(rows) == m
    assert np.array_equal(rows.positions(), np.flatnonzero(np.arange(n) % 50 != 7))
    for column in (train.rejected, train.p_chosen, train.margin, train.identical, train.pair_truncation):
        assert column.rows is rows  # one index for all columns, not one copy each
    dropped_bytes = 2 * 4 * (n - m)  # the dropped positions and their shifts, int32
    assert _resident(train)[0] == dropped_bytes
    for make in (make_pair_batches, lambda *a: make_packed_pair_batches(*a, share_prompt=True)):
        batches = make(train, 16, 0, 3)
        assert isinstance(batches.index, BatchIndex) and batches.index.order.dtype == np.int32
        n_batches = -(-m // 16)
        arrays, objects = _resident(batches)
        assert arrays == dropped_bytes + 4 * m + 4 * n_batches  # dropped rows + batch order + batch permutation
        assert objects < 10_000  # no Python object per batch or per pair
        batch = batches[5]  # the per-pair values are read per batch, equal to the files' values
        index = batch.pair_index.numpy()
        file_p = np.fromfile(next(tmp_path.glob("*/p_chosen.float64")), dtype=np.float64)
        assert np.array_equal(batch.p_chosen.numpy(), file_p[rows.positions()[index]].astype(np.float32))
    # a subset that drops more than it keeps holds the kept positions instead (int32)
    half = opened.subset(np.arange(n) % 3 == 0)
    assert isinstance(half.chosen.rows, np.ndarray) and half.chosen.rows.dtype == np.int32
    assert _resident(half)[0] == 4 * len(half)


def _reference_length_grouped_batches(lengths, batch_size: int, seed: int, group_batches: int = 16) -> list[np.ndarray]:
    """The batches as an int64 ``rng.permutation`` order cut into a list (the form before ``BatchIndex``):
    a resumed run's batches depend on this order staying the same."""
    lengths = np.asarray(lengths)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    group = batch_size * group_batches
    for start in range(0, len(order), group):
        chunk = order[start : start + group]
        order[start : start + group] = chunk[np.argsort(-lengths[chunk], kind="stable")]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


@pytest.mark.parametrize("n,batch_size,seed", [(0, 4, 0), (1, 4, 1), (37, 4, 2), (1000, 16, 0), (70_001, 16, 7)])
def test_the_compact_batch_order_is_the_same_as_the_int64_one(n: int, batch_size: int, seed: int):
    from prefalign.core.training.batching import length_grouped_batches

    lengths = np.random.default_rng(n).integers(1, 200, n)
    compact = length_grouped_batches(lengths, batch_size, seed)
    reference = _reference_length_grouped_batches(lengths, batch_size, seed)
    assert len(compact) == len(reference)
    assert all(a.dtype == np.int64 and np.array_equal(a, b) for a, b in zip(compact, reference))
    assert [list(b) for b in compact[-3:]] == [list(b) for b in reference[-3:]]  # slices and negative positions
    evaluation = length_grouped_batches(lengths, batch_size, None)  # sorted, longest first
    assert np.array_equal(np.concatenate(list(evaluation) or [np.zeros(0, int)]), np.argsort(-lengths, kind="stable"))


@pytest.mark.parametrize("dropped", [[], [0], [9], [0, 1, 2], [3, 4, 8], [1, 3, 5, 7]])
def test_kept_rows_are_the_positions_not_dropped(dropped: list[int]):
    from prefalign.core.training.batching import KeptRows, _compose

    kept = KeptRows(10, np.array(dropped, dtype=np.int32))
    expected = np.array([i for i in range(10) if i not in dropped])
    assert len(kept) == len(expected) and np.array_equal(kept.positions(), expected)
    assert np.array_equal(kept[np.arange(len(kept))], expected) and kept[np.arange(len(kept))].dtype == np.int32
    assert [kept[i] for i in range(-len(kept), len(kept))] == expected.tolist() * 2
    table = np.arange(30).reshape(10, 3)
    assert np.array_equal(kept.select(table), table[expected])
    rows = np.array([7, 7, 2, 0, 9, 4, 1, 3, 8, 5])  # a view's rows, composed with the kept positions
    assert np.array_equal(_compose(rows, kept), rows[expected]) and np.array_equal(_compose(kept, np.array([0, 0])), expected[[0, 0]])
    with pytest.raises(IndexError):
        kept[len(kept)]


@pytest.mark.parametrize("size", [10, 5_000])  # one read per pair / one pass over the store
def test_pair_values_read_and_sum_what_the_arrays_hold(tmp_path: Path, size: int):
    from prefalign.core.training import token_cache as tc
    from prefalign.core.training.batching import PairValues

    counts = np.random.default_rng(1).integers(0, 9, (10_000, 6)).astype(np.int32)
    counts.tofile(tmp_path / "counts")
    values = PairValues(tc.FileArray(tmp_path / "counts", np.int32, counts.size), 6)
    index = np.random.default_rng(2).integers(0, 10_000, size)  # repeats included
    view = values.take(index)
    assert np.array_equal(np.asarray(view), counts[index]) and np.array_equal(view[[3, 0, 3]], counts[index[[3, 0, 3]]])
    assert view.sum(axis=0).tolist() == counts[index].astype(np.int64).sum(axis=0).tolist()
    drop = np.arange(10_000) % 7 == 3  # a subset leaving out few: KeptRows, summed in one pass
    kept = TokenizedPairs([0] * 10_000, [0] * 10_000, np.zeros(10_000), np.zeros(10_000), identical=drop, pair_truncation=values)
    kept = kept.without_identical().pair_truncation
    assert kept.sum(axis=0).tolist() == counts[~drop].astype(np.int64).sum(axis=0).tolist()
    assert np.array_equal(np.asarray(kept), counts[~drop])
    assert np.array_equal(view.take([1, 1]).rows, index[[1, 1]])
    with pytest.raises(IndexError, match="outside 0..9999"):
        values.take([10_000])


# -- the flatten layout's batched renders equal the template's, id for id -----------------------------------------

def test_flatten_fast_renders_equal_apply_chat_template_with_and_without_bos():
    from prefalign.core.training.batching import FLATTEN_TEMPLATE, _render_chat, _render_flatten, sequence_layout

    tok = toy_tokenizer()
    assert sequence_layout(tok) == "flatten"
    odd = ["", " ", "  two  spaces ", "\ttab\n\nnewlines\n", "héllo wörld ✓", " leading", "trailing ",
           f"holds {tok.eos_token} inside", f"{tok.bos_token}starts", "marker \U000f0000 char", "great helpful"]
    prompts = [odd[i % len(odd)] + f" q{i}" if i % 3 else odd[i % len(odd)] for i in range(2 * len(odd))]
    groups = [[odd[(i + 3) % len(odd)], odd[(i * 5) % len(odd)] + " wrong"] for i in range(len(prompts))]
    for bos in (tok.bos_token, None):
        tok.bos_token = bos  # None: the EOS starts the sequence instead (FLATTEN_TEMPLATE's rule)
        flat = [(i, r) for i, g in enumerate(groups) for r in g]
        gen, full = _render_flatten(tok, prompts, groups, flat)
        convs = [[{"role": "user", "content": p}] for p in prompts]
        assert gen == _render_chat(tok, convs, True, FLATTEN_TEMPLATE)
        assert full == _render_chat(tok, [convs[i] + [{"role": "assistant", "content": r}] for i, r in flat], False, FLATTEN_TEMPLATE)
