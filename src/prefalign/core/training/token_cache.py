"""Tokenised pairs cached on disk and read on demand, so training input does not grow with the table.

A pairs table is tokenised ONCE per (tokenizer, lengths, pairs content, rendering code) by the
same rule as ``batching.tokenize_pairs`` (pair-consistent truncation, the tokenizer's layout), in
chunks of ``chunk_rows`` rows, and written as flat arrays of token ids. Training reads them in
place: ``open_token_cache`` returns a ``TokenizedPairs`` whose ``chosen`` / ``rejected`` are
``batching.SequenceView``s over the files (``FileArray``: positional reads served by the OS page
cache, as a memory map would be, without mapped pages in the resident set), so a batch reads only
its own pairs' ids, and its per-pair values (p_chosen, margin, identical, counts:
``batching.PairValues``) are read per batch too; ``subset`` / ``repeat`` / ``without_identical``
keep one int32 row index, not copies. Batches, losses and truncation counts are identical to
tokenising the table in memory (tests/training/test_token_cache.py).

On disk, one folder per key, ``<cache_dir>/pairs_<key>/``::

    tokens.int32          [T] token ids of every sequence, back to back: pair i's chosen is
                          sequence 2i, its rejected sequence 2i+1
    offsets.int64         [2N + 1] start of each sequence in tokens (offsets[-1] = T)
    prompt_lengths.int32  [2N] tokens before the response (layout tokens included)
    p_chosen.float64      [N]
    margin.float64        [N] NaN where the pair has no margin
    identical.uint8       [N] 1 where both sides are the same ids after truncation
    pair_truncation.int32 [N, 6] each pair's truncation counts (``TruncationStats`` fields, in order)
    meta.json             the key's parts, N, T, and the format version (written last)

The key is a hash of: the tokenizer (its serialised vocabulary / merges / normaliser, chat
template, special tokens, class), ``max_length`` and ``max_prompt_length``, the content of the
pairs' ``prompt``, ``chosen``, ``rejected``, ``p_chosen``, ``margin`` and ``prompt_messages``
columns (row hashes, in order), the source of ``batching.py`` (the rendering rule) and the
versions of transformers, tokenizers and polars. Any change gives a new folder; old folders are
left for the user to delete. A folder is built under a temporary name and renamed when complete,
so an interrupted build is never read and processes that build the same key at once are safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl
from transformers import PreTrainedTokenizerBase

from prefalign.core.training import batching
from prefalign.core.training.batching import (
    PairValues,
    SequenceView,
    TokenizedPairs,
    TruncationStats,
    _STATS_FIELDS,
    encode_prompt_groups,
    prompt_messages_of,
    tokenize_pair_frame,
    tokenize_pairs,
)

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
PAIR_COLUMNS = ("prompt", "chosen", "rejected", "p_chosen", "margin", "prompt_messages")
_FILES = {  # name -> (dtype, columns per pair or per sequence)
    "tokens": np.int32,
    "offsets": np.int64,
    "prompt_lengths": np.int32,
    "p_chosen": np.float64,
    "margin": np.float64,
    "identical": np.uint8,
    "pair_truncation": np.int32,
}
META = "meta.json"
PairsInput = pl.DataFrame | pl.LazyFrame


def _file(folder: Path, name: str) -> Path:
    return folder / f"{name}.{np.dtype(_FILES[name]).name}"


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of everything in ``tokenizer`` that changes the ids it gives.

    Args:
        tokenizer: a transformers tokenizer (fast: its serialised ``backend_tokenizer``; slow: its vocabulary).

    Returns:
        32 hex characters.
    """
    h = hashlib.blake2b(digest_size=16)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps({
        "class": type(tokenizer).__name__,
        "chat_template": getattr(tokenizer, "chat_template", None),
        "special_tokens": tokenizer.special_tokens_map,
        "added_tokens": sorted((int(i), str(t)) for i, t in tokenizer.added_tokens_decoder.items()),
        "layout": batching.sequence_layout(tokenizer),
    }, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _columns(schema_names) -> list[str]:
    return [c for c in PAIR_COLUMNS if c in schema_names]


def iter_pair_chunks(pairs: PairsInput, chunk_rows: int) -> Iterator[pl.DataFrame]:
    """The pairs table in order, ``chunk_rows`` rows at a time (a LazyFrame runs on the streaming engine).

    Args:
        pairs: an in-memory table (sliced, no copy) or a lazy one, read one slice at a time: give a
            plain scan (``pl.scan_parquet``); a filtered query would be re-run for every slice (sink
            it to parquet first).
        chunk_rows: rows per chunk, >= 1.

    Returns:
        An iterator of DataFrames holding only the columns tokenisation reads.
    """
    if isinstance(pairs, pl.LazyFrame):
        # Slices, read when asked: polars' collect_batches runs ahead of a slow consumer and buffered
        # (measured) ~400 MB per 1M pairs; a slice of a parquet scan reads only its row groups.
        lazy = pairs.select(_columns(pairs.collect_schema().names()))
        total = pairs.select(pl.len()).collect().item()
        for start in range(0, total, chunk_rows):
            yield lazy.slice(start, chunk_rows).collect()
        return
    frame = pairs.select(_columns(pairs.columns))
    yield from frame.iter_slices(chunk_rows)


def pairs_fingerprint(pairs: PairsInput, chunk_rows: int = 20_000) -> tuple[str, int]:
    """A content hash of the columns tokenisation reads (row hashes, in order), read in chunks.

    Args:
        pairs: the pairs table (in memory or lazy).
        chunk_rows: rows hashed at a time.

    Returns:
        (32 hex characters, number of rows). Polars' row hash is stable within a polars version;
        the key includes that version.
    """
    h = hashlib.blake2b(digest_size=16)
    rows = 0
    for chunk in iter_pair_chunks(pairs, chunk_rows):
        if rows == 0:
            h.update(json.dumps([[n, str(d)] for n, d in chunk.schema.items()]).encode())
        h.update(chunk.hash_rows(seed=0).to_numpy().tobytes())
        rows += chunk.height
    h.update(str(rows).encode())
    return h.hexdigest(), rows


def _code_fingerprint() -> str:
    import tokenizers
    import transformers

    h = hashlib.blake2b(digest_size=16)
    h.update(Path(batching.__file__).read_bytes())  # the rendering and truncation rule
    h.update(f"{CACHE_FORMAT}|{transformers.__version__}|{tokenizers.__version__}|{pl.__version__}".encode())
    return h.hexdigest()


def cache_key(tokenizer: PreTrainedTokenizerBase, max_length: int, max_prompt_length: int, pairs: PairsInput) -> dict:
    """The parts that name a cache folder, and their hash.

    Args:
        tokenizer: the tokenizer.
        max_length: the sequence cap in tokens (prompt + response).
        max_prompt_length: the prompt is never cut below this many tokens.
        pairs: the pairs table.

    Returns:
        ``{"key": 24 hex characters, "tokenizer", "max_length", "max_prompt_length", "pairs", "rows", "code"}``.
    """
    pairs_hash, rows = pairs_fingerprint(pairs)
    parts = {"tokenizer": tokenizer_fingerprint(tokenizer), "max_length": int(max_length),
             "max_prompt_length": int(max_prompt_length), "pairs": pairs_hash, "rows": rows, "code": _code_fingerprint()}
    key = hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=12).hexdigest()
    return {"key": key, **parts}


def _table_keep_first(tokenizer: PreTrainedTokenizerBase, first: pl.DataFrame) -> int:
    """Leading prompt tokens never cut, as ``tokenize_pairs`` reads them from a table's first row."""
    return encode_prompt_groups(tokenizer, first["prompt"].to_list(), [first["chosen"].to_list() + first["rejected"].to_list()],
                                prompt_messages_of(first))[2]


def build_token_cache(
    tokenizer: PreTrainedTokenizerBase,
    pairs: PairsInput,
    max_length: int,
    max_prompt_length: int,
    cache_dir: str | Path,
    chunk_rows: int = 5_000,
) -> Path:
    """The cache folder of these pairs, tokenised now unless it is already there.

    Memory: one chunk of ``chunk_rows`` pairs (texts, the tokenizer's encodings, ids) at a time; files
    are appended to. Measured: 5,000 rows peak at 602 MB, 20,000 at 919 MB (20k pairs, BPE 2048).

    Args:
        tokenizer: the tokenizer.
        max_length: the sequence cap in tokens (prompt + response).
        max_prompt_length: the prompt is never cut below this many tokens.
        pairs: the pairs table (prompt, chosen, rejected[, p_chosen, margin, prompt_messages]);
            a LazyFrame is read on the streaming engine, never whole;
        cache_dir: the folder holding cache folders (created if missing);
        chunk_rows: pairs tokenised at a time.

    Returns:
        ``cache_dir/pairs_<key>``.

    Raises:
        ValueError: bad lengths (``tokenize_pairs``), or ``chunk_rows`` < 1.
    """
    if chunk_rows < 1:
        raise ValueError(f"token cache chunk_rows={chunk_rows} must be >= 1")
    batching._check_lengths(max_length, max_prompt_length)
    key = cache_key(tokenizer, max_length, max_prompt_length, pairs)
    cache_dir = Path(cache_dir)
    final = cache_dir / f"pairs_{key['key']}"
    if (final / META).exists():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".building_{key['key']}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    started = time.perf_counter()
    try:
        handles = {name: open(_file(tmp, name), "wb") for name in _FILES}
        try:
            n_pairs, n_tokens, keep = 0, 0, None
            totals = np.zeros(len(_STATS_FIELDS), dtype=np.int64)
            handles["offsets"].write(np.zeros(1, dtype=np.int64).tobytes())
            for chunk in iter_pair_chunks(pairs, chunk_rows):
                if chunk.height == 0:
                    continue
                if keep is None:
                    keep = _table_keep_first(tokenizer, chunk.head(1))
                tok = tokenize_pairs(
                    tokenizer, chunk["prompt"].to_list(), chunk["chosen"].to_list(), chunk["rejected"].to_list(),
                    chunk["p_chosen"].to_list() if "p_chosen" in chunk.columns else None,
                    chunk["margin"].to_list() if "margin" in chunk.columns else None, max_length, max_prompt_length,
                    prompt_messages_of(chunk), keep_first=keep,
                )
                seqs = [s for pair in zip(tok.chosen, tok.rejected) for s in pair]  # chosen 2i, rejected 2i+1
                lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
                ids = np.fromiter((t for s in seqs for t in s.input_ids), dtype=np.int64, count=int(lengths.sum()))
                if ids.size and (ids.min() < 0 or ids.max() > np.iinfo(np.int32).max):
                    raise ValueError(f"token ids outside int32 ({ids.min()}..{ids.max()}); the cache stores int32 ids")
                handles["tokens"].write(ids.astype(np.int32).tobytes())
                handles["offsets"].write((n_tokens + np.cumsum(lengths)).astype(np.int64).tobytes())
                handles["prompt_lengths"].write(np.array([s.prompt_length for s in seqs], dtype=np.int32).tobytes())
                handles["p_chosen"].write(np.asarray(tok.p_chosen, dtype=np.float64).tobytes())
                handles["margin"].write(np.asarray(tok.margin, dtype=np.float64).tobytes())
                handles["identical"].write(np.asarray(tok.identical, dtype=np.uint8).tobytes())
                handles["pair_truncation"].write(np.asarray(tok.pair_truncation, dtype=np.int32).tobytes())
                totals += np.asarray(tok.pair_truncation, dtype=np.int64).sum(axis=0)
                n_pairs += chunk.height
                n_tokens += int(lengths.sum())
        finally:
            for handle in handles.values():
                handle.close()
        meta = {"format": CACHE_FORMAT, **key, "pairs_count": n_pairs, "tokens_count": n_tokens,
                "stats_fields": _STATS_FIELDS, "truncation": dict(zip(_STATS_FIELDS, map(int, totals))), "build_seconds": round(time.perf_counter() - started, 3)}
        (tmp / META).write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, final)
        except OSError:  # another process built the same key first: use its folder
            if not (final / META).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("token cache: %d pairs, %d tokens tokenised in %.1f s -> %s", n_pairs, n_tokens,
             time.perf_counter() - started, final)
    return final


class FileArray:
    """A 1-D array in a raw file, read by positional reads (``os.pread``) when indexed.

    Why not ``np.memmap`` for the ids: measured on this machine, 640 random sequence reads from a
    mapped 428 MB ids file added 347 MB to the process's resident set (the kernel maps whole large
    page-cache folios per fault, MADV_RANDOM or not). With ``pread`` the file's pages stay in the
    shared, reclaimable page cache (the same caching as a map) and only the ids read are copied.

    Args:
        path: the file; dtype: its item type; count: items in it.
    """

    def __init__(self, path: str | Path, dtype, count: int):
        self.path, self.dtype, self.count = str(path), np.dtype(dtype), int(count)
        self._fd: int | None = None

    def _handle(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, key):
        size = self.dtype.itemsize
        if isinstance(key, slice):
            start, stop, step = key.indices(self.count)
            if step != 1:
                raise IndexError(f"FileArray reads contiguous slices only (step {step})")
            n = max(0, stop - start)
            return np.frombuffer(os.pread(self._handle(), n * size, start * size), dtype=self.dtype, count=n)
        index = int(key) + (self.count if int(key) < 0 else 0)
        if not 0 <= index < self.count:
            raise IndexError(f"index {key} of a FileArray of {self.count}")
        return np.frombuffer(os.pread(self._handle(), size, index * size), dtype=self.dtype)[0]

    def __getstate__(self) -> dict:  # a pickled copy (another process) opens its own descriptor
        return {**self.__dict__, "_fd": None}

    def __del__(self, _close=os.close) -> None:  # os.close bound now: at interpreter exit ``os`` may be gone
        if getattr(self, "_fd", None) is not None:
            _close(self._fd)


def open_token_cache(folder: str | Path) -> TokenizedPairs:
    """The cached pairs as ``TokenizedPairs`` whose ids stay on disk (read per sequence, ``FileArray``).

    Args:
        folder: a folder made by ``build_token_cache``.

    Returns:
        ``TokenizedPairs`` with ``SequenceView`` chosen / rejected (items equal to ``tokenize_pairs``')
        and ``PairValues`` p_chosen / margin (float64 [N]), identical (bool [N]) and per-pair counts
        (int32 [N, 6]): nothing per pair is read into memory here.

    Raises:
        FileNotFoundError: the folder has no ``meta.json`` (not built, or built by an interrupted run).
        ValueError: the folder's format is not ``CACHE_FORMAT`` (delete it; it is rebuilt).
    """
    folder = Path(folder)
    meta_path = folder / META
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} is not a complete token cache (no {META}); build it with build_token_cache")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != CACHE_FORMAT or meta.get("stats_fields") != _STATS_FIELDS:
        raise ValueError(f"token cache {folder} has format {meta.get('format')} (this code reads {CACHE_FORMAT}); delete it")
    n, t = meta["pairs_count"], meta["tokens_count"]
    # everything is read when asked (FileArray): ids, offsets and prompt lengths per sequence, the
    # per-pair values per batch; what a run keeps per pair is its row and batch index (int32)
    tokens = FileArray(_file(folder, "tokens"), _FILES["tokens"], t)
    offsets = FileArray(_file(folder, "offsets"), _FILES["offsets"], 2 * n + 1)
    prompt_lengths = FileArray(_file(folder, "prompt_lengths"), _FILES["prompt_lengths"], 2 * n)

    def values(name: str, width: int = 1, dtype=None) -> PairValues:
        return PairValues(FileArray(_file(folder, name), _FILES[name], n * width), width, dtype=dtype)

    return TokenizedPairs(
        SequenceView(tokens, offsets, prompt_lengths, 0, 2), SequenceView(tokens, offsets, prompt_lengths, 1, 2),
        values("p_chosen"), values("margin"), TruncationStats(**meta["truncation"]), values("identical", dtype=bool),
        values("pair_truncation", len(_STATS_FIELDS)),
    )


def cached_tokenize_pair_frame(
    tokenizer: PreTrainedTokenizerBase,
    pairs: PairsInput,
    max_length: int,
    max_prompt_length: int,
    cache_dir: str | Path | None,
    chunk_rows: int = 5_000,
) -> TokenizedPairs:
    """``tokenize_pair_frame`` through the on-disk cache: the training entry points' one call.

    Args:
        tokenizer, max_length, max_prompt_length: as ``tokenize_pair_frame``;
        pairs: the selected pairs (DataFrame; a LazyFrame only with a ``cache_dir``);
        cache_dir: the cache root (conf: ``token_cache_dir``), or None to tokenise in memory as before;
        chunk_rows: pairs tokenised at a time while building.

    Returns:
        ``TokenizedPairs``, equal item by item to ``tokenize_pair_frame(tokenizer, pairs, ...)``.

    Raises:
        ValueError: a LazyFrame without a ``cache_dir`` (it would be collected whole: give a cache dir or collect it).
    """
    if cache_dir is None:
        if isinstance(pairs, pl.LazyFrame):
            raise ValueError("a lazy pairs table needs a token cache_dir (set token_cache_dir), or collect it first")
        return tokenize_pair_frame(tokenizer, pairs, max_length, max_prompt_length)
    return open_token_cache(build_token_cache(tokenizer, pairs, max_length, max_prompt_length, cache_dir, chunk_rows))


def cache_size_bytes(folder: str | Path) -> int:
    """Bytes on disk of a cache folder (all its files).

    Args:
        folder: a cache folder (``build_token_cache``'s result).

    Returns:
        The summed size of its files, in bytes.
    """
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())
