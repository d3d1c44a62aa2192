"""Frozen lower layers computed once per sequence: the upper layers train from cached activations.

With ``model.freeze_layers: N`` the input embeddings and the lowest N transformer layers never
change, so their output for a given packed segment is the same at every epoch, for every objective
trained on the same backbone, and for every batch the segment lands in: attention never crosses a
packed segment (``packing.py``), so a segment's hidden states depend on its own tokens and layout
alone. ``model.cache_frozen_layers: true`` computes the hidden states after layer N once per
segment (no gradient, eval mode) and keeps them in memory; every later forward runs only layers
N.. and the head from the cache. For a 30-layer model with 4 trained layers a training step then
costs the upper 4 layers' forward and backward instead of 30 layers' forward and 4 layers' backward.

How the upper part runs: the model is called with ``inputs_embeds`` = the cached hidden states and
its layer list temporarily cut to layers N.., so rotary positions, the packed-segment attention and
the final norm are the model's own code. The first batch is checked against the uncached forward
(``FrozenLayerCache.verified``): an architecture whose ``inputs_embeds`` path differs (e.g. one that
scales the embeddings inside ``forward``) fails there, naming the difference, instead of training
on wrong activations.

Caches are shared by every model with the same frozen weights (a fingerprint of the frozen
tensors) in one process, so BT, MMPO and GPM reward models of one ``kedro run`` compute the lower
layers of a pair once. Equality with the uncached forward is tested (tests/training/test_frozen_cache.py).
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from typing import Iterator

import torch

log = logging.getLogger(__name__)

CACHE_ATTRIBUTE = "prefalign_frozen_cache"
_CACHES: dict[tuple[str, int], "FrozenLayerCache"] = {}
VERIFY_TOLERANCE = 1e-4  # max |difference| of the first batch's outputs, cached vs uncached (fp32)


class FrozenLayerCache:
    """Hidden states after the lowest ``num_layers`` layers, per packed segment.

    A segment is keyed by its token ids and its layout (prompt, chosen and segment lengths), which
    fix its position ids and attention pattern. Values are [segment length, hidden] tensors on CPU.

    Args:
        num_layers: N, the frozen layers (the embeddings are frozen too).
        max_bytes: stop adding segments past this size (they are then computed at every use).
    """

    def __init__(self, num_layers: int, max_bytes: int):
        self.num_layers = num_layers
        self.max_bytes = max_bytes
        self.store: dict[bytes, torch.Tensor] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.verified = False

    def __deepcopy__(self, memo: dict) -> "FrozenLayerCache":
        return self  # a copied model (GPO's per-iteration snapshots) has the same frozen weights: share, never copy GBs

    def stats(self) -> dict[str, float]:
        """Segments held, their size in MB, and the hit/miss counts of segment look-ups.

        Returns:
            ``{"segments": count, "megabytes": MiB held (2**20 bytes), "hits": count, "misses": count}``.
        """
        return {"segments": len(self.store), "megabytes": self.bytes / 2**20, "hits": self.hits, "misses": self.misses}

    @staticmethod
    def segment_key(ids: torch.Tensor, start: int, prompt_end: int, chosen_end: int, end: int) -> bytes:
        """The cache key of one packed segment: its token ids and its layout relative to its start.

        Args:
            ids: the segment's token ids, shape [end - start], on CPU.
            start: the segment's first column in its packed row.
            prompt_end: the column where its prompt ends (its chosen response starts).
            chosen_end: the column where its chosen response ends.
            end: one past its last column.

        Returns:
            A 20-byte BLAKE2b digest.
        """
        layout = f"{prompt_end - start},{chosen_end - start},{end - start}".encode()
        return hashlib.blake2b(ids.numpy().tobytes() + b"|" + layout, digest_size=20).digest()


def decoder_stack(model: torch.nn.Module) -> torch.nn.Module:
    """The module that owns the transformer layer list and takes ``inputs_embeds`` (e.g. ``LlamaModel``).

    Raises:
        ValueError: no module of ``model`` holds a ``layers`` list of ``num_hidden_layers`` entries.

    Args:
        model: a transformers model (bare, causal LM, with a head, or peft-wrapped).

    Returns:
        The first submodule (in ``model.modules()`` order) with a ``layers`` ModuleList of
        ``config.num_hidden_layers`` entries.
    """
    for module in model.modules():
        layers = getattr(module, "layers", None)
        config = getattr(module, "config", None)
        if isinstance(layers, torch.nn.ModuleList) and config is not None and len(layers) == getattr(config, "num_hidden_layers", -1):
            return module
    raise ValueError(f"{type(model).__name__} has no `layers` list of its config's num_hidden_layers; "
                     "set model.cache_frozen_layers: false")


def fingerprint(stack: torch.nn.Module, num_layers: int) -> str:
    """A hash of the frozen tensors (input embeddings and layers 0..N-1): equal weights, equal caches.

    Args:
        stack: the decoder stack (``decoder_stack(model)``).
        num_layers: N, the frozen layers.

    Returns:
        40 hex characters (BLAKE2b of the fp32 bytes of the embedding and layer 0..N-1 parameters).
    """
    digest = hashlib.blake2b(digest_size=20)
    tensors = list(stack.get_input_embeddings().parameters()) + [p for layer in stack.layers[:num_layers] for p in layer.parameters()]
    for tensor in tensors:
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _lower_parameters(stack: torch.nn.Module, num_layers: int) -> list[tuple[str, torch.nn.Parameter]]:
    return list(stack.get_input_embeddings().named_parameters()) + [
        (f"layers.{i}.{name}", p) for i, layer in enumerate(stack.layers[:num_layers]) for name, p in layer.named_parameters()
    ]


def frozen_prefix_layers(model: torch.nn.Module) -> int:
    """How many of ``model``'s lowest layers (with its input embeddings) have no trainable parameter:
    the ``frozen_layers`` a checkpoint records, so scoring can read those layers from the cache. 0 for
    models without a decoder stack or with trainable embeddings.

    Args:
        model: a transformers model (possibly with a head or peft-wrapped).

    Returns:
        N >= 1 frozen lowest layers, or 0 (no decoder stack, trainable embeddings, layer 0 trainable,
        or no layer trainable at all).
    """
    try:
        stack = decoder_stack(model)
    except ValueError:
        return 0
    if any(p.requires_grad for p in stack.get_input_embeddings().parameters()):
        return 0
    count = 0
    for layer in stack.layers:
        if any(p.requires_grad for p in layer.parameters()):
            break
        count += 1
    return count if count < len(stack.layers) else 0  # nothing trained: no frozen "prefix" to speak of


def enable_frozen_cache(model: torch.nn.Module, num_layers: int, max_gigabytes: float = 4.0,
                        require_frozen: bool = True) -> FrozenLayerCache:
    """Attach the (shared) cache of ``model``'s lowest ``num_layers`` layers; returns it.

    Args:
        model: a transformers model (bare, a causal LM, or peft-wrapped) whose embeddings and
            lowest ``num_layers`` layers are frozen (``backbone.freeze_lower_layers``).
        num_layers: N >= 1.
        max_gigabytes: the cache's size limit.
        require_frozen: False for a model that only scores (a loaded checkpoint): its lower layers
            need not be marked frozen, the cache is keyed by their weights, and a forward that could
            change them (gradients on, lower layers trainable) runs uncached.

    Raises:
        ValueError: N < 1, or (``require_frozen``) a parameter of the embeddings or of layers 0..N-1
            still trains (LoRA adapters there, for example): the cache would hold stale activations.

    Returns:
        The FrozenLayerCache, shared with every model of this process whose frozen tensors hash alike.
    """
    if num_layers < 1:
        raise ValueError(f"model.cache_frozen_layers needs model.freeze_layers >= 1 (got {num_layers})")
    stack = decoder_stack(model)
    lower = _lower_parameters(stack, num_layers)
    training = [name for name, p in lower if p.requires_grad]
    if training and require_frozen:
        raise ValueError(
            f"model.cache_frozen_layers: the lowest {num_layers} layers must be frozen, but {training[:3]} train "
            "(LoRA on those layers?); restrict the adapters to the upper layers (model.lora.layers_to_transform) "
            "or set model.cache_frozen_layers: false"
        )
    key = (fingerprint(stack, num_layers), num_layers)
    cache = _CACHES.get(key)
    if cache is None:
        cache = _CACHES[key] = FrozenLayerCache(num_layers, int(max_gigabytes * 2**30))
    setattr(stack, CACHE_ATTRIBUTE, cache)
    return cache


def frozen_cache_of(model: torch.nn.Module) -> FrozenLayerCache | None:
    """The cache attached to ``model``'s decoder stack, or None.

    Args:
        model: a transformers model (possibly wrapped).

    Returns:
        Its FrozenLayerCache, or None (no cache in this process, no decoder stack, or none attached).
    """
    if not _CACHES:  # every packed forward asks: without any cache in this process, no module walk
        return None
    try:
        return getattr(decoder_stack(model), CACHE_ATTRIBUTE, None)
    except ValueError:
        return None


@contextmanager
def layers_cut_to(stack: torch.nn.Module, keep: slice) -> Iterator[None]:
    """Run ``stack`` with only ``stack.layers[keep]`` (the weights are the same modules).

    Args:
        stack: the decoder stack.
        keep: which layers to keep, e.g. ``slice(0, N)`` (lower) or ``slice(N, None)`` (upper).

    Yields:
        Nothing; the full layer list is restored when the block ends, also on an error.
    """
    full = stack.layers
    stack.layers = torch.nn.ModuleList(list(full)[keep])
    try:
        yield
    finally:
        stack.layers = full


def _lower_hidden(stack: torch.nn.Module, inputs: dict, num_layers: int) -> torch.Tensor:
    """[R, W, H] output of layer N-1 for a packed batch (no gradient)."""
    captured: list[torch.Tensor] = []

    def keep_output(_module, _args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = stack.layers[num_layers - 1].register_forward_hook(keep_output)
    plan = inputs.get("packed_segments")
    if plan is not None:
        plan.calls = 0
    try:
        with torch.no_grad(), layers_cut_to(stack, slice(0, num_layers)):
            was_training = stack.training
            stack.eval()
            try:
                stack(**inputs)
            finally:
                stack.train(was_training)
    finally:
        handle.remove()
    if plan is not None and plan.calls < num_layers:
        raise RuntimeError(f"only {plan.calls} of {num_layers} frozen layers attended per packed segment; "
                           "set model.cache_frozen_layers: false")
    return captured[-1].detach()


def cached_lower_hidden(cache: FrozenLayerCache, stack: torch.nn.Module, packed, inputs: dict) -> torch.Tensor:
    """The frozen layers' output for ``packed`` ([R, W, H]), from the cache where every segment is in it.

    A batch with any missing segment is computed whole (one forward of the lower layers) and its
    segments are stored while the cache has room. Row tails (padding) are zeros: never attended to.

    Args:
        cache: the stack's cache (updated: hits, misses, new segments).
        stack: the decoder stack.
        packed: a ``PackedSequences`` with ``input_ids`` [R, W] and its ``plan.segments``.
        inputs: ``packing.model_inputs(model, packed)`` (used when a segment is missing).

    Returns:
        Hidden states [R, W, H] after layer N-1 (in the model's dtype), on the model's device, zeros
        outside segments.

    Raises:
        RuntimeError: (on a miss) fewer than N layers ran the packed-segment attention.
    """
    ids = packed.input_ids.cpu()
    keys = [(FrozenLayerCache.segment_key(ids[row, start:end], start, prompt_end, chosen_end, end), row, start, end)
            for row, start, prompt_end, chosen_end, end in packed.plan.segments]
    if all(key in cache.store for key, *_ in keys):
        cache.hits += len(keys)
        first = cache.store[keys[0][0]]
        hidden = torch.zeros(*ids.shape, first.shape[-1], dtype=first.dtype)
        for key, row, start, end in keys:
            hidden[row, start:end] = cache.store[key]
        return hidden.to(packed.input_ids.device)
    cache.misses += sum(key not in cache.store for key, *_ in keys)
    hidden = _lower_hidden(stack, inputs, cache.num_layers)
    cpu = hidden.cpu()
    for key, row, start, end in keys:
        if key in cache.store:
            continue
        value = cpu[row, start:end].clone()
        size = value.numel() * value.element_size()
        if cache.bytes + size > cache.max_bytes:
            break
        cache.store[key] = value
        cache.bytes += size
    tail = torch.ones(ids.shape, dtype=torch.bool)
    for _, row, start, end in keys:
        tail[row, start:end] = False
    return hidden.masked_fill(tail.to(hidden.device)[..., None], 0.0)


@contextmanager
def _other_hooks_silenced(stack: torch.nn.Module) -> Iterator[None]:
    """Run ``stack`` without the forward hooks others put on it (e.g. the chunked log-prob path's
    capture of the final hidden states, policy/logprobs.py): the lower-layer pass and the check
    against the full forward must not look like the model's forward to them."""
    saved = dict(stack._forward_hooks)
    stack._forward_hooks.clear()
    try:
        yield
    finally:
        stack._forward_hooks.update(saved)


def _stack_output(stack: torch.nn.Module, run) -> tuple[object, torch.Tensor]:
    """(``run()``'s result, the decoder stack's last hidden state [R, W, H] in that call)."""
    seen: list[torch.Tensor] = []

    def keep(_module, _args, output):
        seen.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

    handle = stack.register_forward_hook(keep)
    try:
        result = run()
    finally:
        handle.remove()
    return result, seen[-1]


def forward_from_cache(model: torch.nn.Module, packed, inputs: dict, cache: FrozenLayerCache, **kwargs):
    """``model``'s output for the packed batch, running only layers N.. on the cached activations.

    Args:
        model: the model as ``packing.packed_forward`` received it (possibly wrapped).
        packed: a ``PackedSequences`` (R rows of width W).
        inputs: ``packing.model_inputs(model, packed)``.
        cache: the stack's ``FrozenLayerCache``.
        **kwargs: passed on to the model call (e.g. ``logits_to_keep``).

    Returns:
        The model's own output object (``last_hidden_state`` or ``logits``), as the full forward's.
        The decoder stack runs once with the hooks others registered on it (the upper layers, the
        call whose output is the model's); the lower-layer pass and the first-batch check run
        without them.

    Raises:
        RuntimeError: on the first batch, when the final hidden states differ from the uncached
            forward's by more than ``VERIFY_TOLERANCE`` (the architecture's ``inputs_embeds`` path is
            not the plain one).
    """
    stack = decoder_stack(model)
    n = cache.num_layers
    if torch.is_grad_enabled() and any(p.requires_grad for _, p in _lower_parameters(stack, n)):
        # these layers may change (a scoring-only cache on a model now being trained): never cached
        packed.plan.calls = 0
        return model(**inputs, **kwargs)
    reference = None
    if not cache.verified:
        with torch.no_grad(), _other_hooks_silenced(stack):
            _, reference = _stack_output(stack, lambda: model(**inputs, **kwargs))
    with _other_hooks_silenced(stack):
        lower = cached_lower_hidden(cache, stack, packed, inputs)
    upper_inputs = {k: v for k, v in inputs.items() if k != "input_ids"}
    plan = inputs.get("packed_segments")
    if plan is not None:
        plan.calls = 0
    with layers_cut_to(stack, slice(n, None)):
        out, hidden = _stack_output(stack, lambda: model(inputs_embeds=lower, **upper_inputs, **kwargs))
    if plan is not None and plan.calls < len(stack.layers) - n:
        raise RuntimeError(f"only {plan.calls} of {len(stack.layers) - n} upper layers attended per packed segment")
    if reference is not None:
        diff = float((hidden.detach().float() - reference.float()).abs().max()) if hidden.numel() else 0.0
        if diff > VERIFY_TOLERANCE:
            raise RuntimeError(
                f"model.cache_frozen_layers: the cached forward of {type(stack).__name__} differs from the full forward by "
                f"{diff:.3g} (> {VERIFY_TOLERANCE}); this architecture's inputs_embeds path is not the plain one: "
                "set model.cache_frozen_layers: false"
            )
        cache.verified = True
        log.info("frozen-layer cache of %s verified on the first batch (max |diff| %.2e)", type(stack).__name__, diff)
    return out


def clear_caches() -> None:
    """Forget every cache of this process (tests; frees memory)."""
    _CACHES.clear()


