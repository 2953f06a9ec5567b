"""Key/value buffers with room to grow, for decoding a few tokens without copying the cache.

transformers' ``DynamicLayer`` appends each decoded position with ``torch.cat``, which copies the
layer's whole cache at every token: on CPU that copy took about half of a decode step of the
embedded prior. A ``ReservedLayer`` keeps the cache at the front of a larger buffer and writes
new positions in place; ``keys``/``values`` are views of the filled part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


@dataclass
class RaggedRows:
    """Where the rows of a flattened (unpadded) forward belong in a batch of prompts.

    The forward runs ``n`` real query rows as one sequence (input ``[1, n]``), so its linear
    layers see no padding. Row ``i`` belongs to prompt ``rows[i]``: its keys/values go to that
    prompt's cache row at position ``columns[i]``, and in attention it is query ``slots[i]`` of
    that prompt's (padded) block of ``queries`` query rows. After the forward each cache layer
    holds ``length`` positions. ``cpu_kernels.flat_forward`` hands it to the cache update and
    the attention itself; for other models it is passed to the model as the keyword ``ragged``,
    which transformers hands on to both (``cpu_kernels.sdpa_gqa``).
    """

    rows: torch.Tensor
    slots: torch.Tensor
    columns: torch.Tensor
    queries: int
    length: int
    #: a prefill: per prompt (cache row, first flattened row, new tokens, prompt length). Its
    #: new tokens are the last of its row and attend causally (``cpu_kernels.prefill_attention``);
    #: None: a decode step, under the attention mask
    spans: list[tuple[int, int, int, int]] | None = None


class ReservedLayer(DynamicLayer):
    """A layer's keys/values at the front of buffers with ``room`` free positions after them.

    ``update`` writes the new positions in place; the plain ``DynamicLayer`` concatenates,
    copying the whole cache at every decoded token.
    """

    def __init__(self, shape: tuple[int, ...], room: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        """Zeros of ``shape`` (rows, heads, length, dim), to be filled in place. Zeros, not
        uninitialised memory: masked-out (left-padding) positions still enter the attention
        product with weight 0, and 0 * NaN would be NaN."""
        super().__init__()
        rows, heads, length, dim = shape
        self._keys = torch.zeros(rows, heads, length + room, dim, dtype=dtype, device=device)
        self._values = torch.zeros_like(self._keys)
        self.length = length
        self.rows = rows
        #: set while the prior runs flattened forwards on this cache: an update without its
        #: ``RaggedRows`` then means the model did not pass them on, and is refused
        self.flattened = False
        self.dtype, self.device, self.is_initialized = dtype, device, True
        self._expose()

    @classmethod
    def holding(cls, keys: torch.Tensor, values: torch.Tensor, room: int) -> ReservedLayer:
        """A copy of ``keys``/``values`` with ``room`` free positions after them."""
        layer = cls(tuple(keys.shape), room, keys.dtype, keys.device)
        layer.keys.copy_(keys)
        layer.values.copy_(values)
        return layer

    def _expose(self) -> None:
        self.keys = self._keys[: self.rows, :, : self.length]
        self.values = self._values[: self.rows, :, : self.length]

    def keep_rows(self, index: torch.Tensor, moved: int | None = None) -> None:
        """Keep only rows ``index`` (ascending), moved in place to the front of the buffers.

        Rows before the first one that moves stay where they are; nothing is reallocated.
        ``moved`` is ``first_moved(index)``: a caller compacting many layers passes it once
        (working it out reads the index back from the device: a sync per layer on CUDA).
        """
        moved = first_moved(index) if moved is None else moved
        if moved < len(index):
            self._keys[moved : len(index)] = self._keys[index[moved:]]
            self._values[moved : len(index)] = self._values[index[moved:]]
        self.rows = len(index)
        self._expose()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        ragged = (kwargs.get("kwargs") or {}).get("ragged")
        if ragged is None and self.flattened:
            raise RuntimeError("this model does not pass the flattened rows on to its cache "
                               "update; run it with prior_cpu_kernels: false")
        if ragged is not None:  # one flattened sequence of rows: each to its prompt and column
            self._keys[ragged.rows, :, ragged.columns] = key_states[0].transpose(0, 1)
            self._values[ragged.rows, :, ragged.columns] = value_states[0].transpose(0, 1)
            self.length = ragged.length
            self._expose()
            return self.keys, self.values
        end = self.length + key_states.shape[-2]
        if end > self._keys.shape[2]:  # out of room: grow like a DynamicLayer would
            grown = ReservedLayer.holding(self.keys, self.values, end - self.length)
            self._keys, self._values = grown._keys, grown._values
        self._keys[: self.rows, :, self.length : end] = key_states
        self._values[: self.rows, :, self.length : end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values


def first_moved(index: torch.Tensor) -> int:
    """The first position of ascending row numbers ``index`` that is not its own row number
    (``len(index)`` when none moves)."""
    in_place = index == torch.arange(len(index), device=index.device)
    return len(index) if bool(in_place.all()) else int((~in_place).nonzero()[0])


def reserved_cache(cache, index: torch.Tensor, room: int):
    """A new cache of ``cache``'s rows ``index``, each layer with ``room`` free positions.

    Consumes ``cache``: each of its layers is dropped as soon as its copy is made, so at most
    one layer is held twice (building the whole copy first would hold the cache twice at once).
    """
    copy = DynamicCache()
    copy.layers = []
    layers = cache.layers
    for i, layer in enumerate(layers):
        copy.layers.append(ReservedLayer.holding(layer.keys[index], layer.values[index], room))
        layers[i] = None  # type: ignore[call-overload]
        del layer
    return copy
