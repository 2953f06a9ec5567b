"""Prefix KV cache: the keys and values a frozen LM computed for a token prefix, reused.

Prompts of one env share long token prefixes (task, "History:", the same first moves of many
episodes): over 30 random-policy episodes about half of all prompt tokens of Frozen Lake and
Overcooked Tomato begin a prefix some earlier prompt already had. In a causal LM the keys and
values at position i depend only on tokens 0..i, so a prompt whose first m tokens were seen
needs a forward over its last n - m tokens only -- the same numbers up to float rounding.

A radix tree over token ids; each node holds its token segment's keys and values for all
layers (``[layers, kv_heads, tokens, head_dim]``). Size is bounded in bytes: the least recently
used leaves are dropped first.
"""

from __future__ import annotations

import itertools

import torch


class _Node:
    __slots__ = ("tokens", "keys", "values", "children", "parent", "used")

    def __init__(self, tokens: tuple[int, ...], keys, values, parent) -> None:
        self.tokens, self.keys, self.values, self.parent = tokens, keys, values, parent
        self.children: dict[int, _Node] = {}
        self.used = 0

    @property
    def nbytes(self) -> int:
        if self.keys is None:
            return 0
        return self.keys.numel() * self.keys.element_size() * 2


def common_length(a, b, start: int = 0) -> int:
    """How many leading tokens of ``a`` equal those of ``b`` from position ``start`` on."""
    n = 0
    for x, y in zip(a, itertools.islice(b, start, None)):
        if x != y:
            break
        n += 1
    return n


class PrefixKVCache:
    """``match(ids) -> (m, keys, values)`` for the longest cached prefix; ``insert(ids, k, v)``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.root = _Node((), None, None, None)
        self.nbytes = 0
        self._clock = itertools.count(1)

    def match(self, ids: list[int]) -> tuple[int, torch.Tensor | None, torch.Tensor | None]:
        """Length of the longest cached prefix of ``ids`` and its keys/values (or None)."""
        stamp = next(self._clock)
        keys, values, pos = [], [], 0
        for child, n in self._path(ids):
            child.used = stamp
            keys.append(child.keys[:, :, :n])
            values.append(child.values[:, :, :n])
            pos += n
        if not keys:
            return 0, None, None
        return pos, torch.cat(keys, dim=2), torch.cat(values, dim=2)

    def matched_length(self, ids: list[int]) -> int:
        """Length of the longest cached prefix of ``ids`` (nothing copied or marked used)."""
        return sum(n for _, n in self._path(ids))

    def _path(self, ids: list[int]):
        """The nodes along ``ids``' longest cached prefix, each with how many tokens it gives."""
        node, pos = self.root, 0
        while pos < len(ids):
            child = node.children.get(ids[pos])
            if child is None:
                return
            n = common_length(child.tokens, ids, pos)
            yield child, n
            pos += n
            if n < len(child.tokens):
                return
            node = child

    def insert(self, ids: list[int], keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store the keys/values (``[layers, heads, len(ids), dim]``) of prompt ``ids``."""
        if self.max_bytes <= 0:
            return
        node, pos = self.root, 0
        stamp = next(self._clock)
        while pos < len(ids):
            child = node.children.get(ids[pos])
            if child is None:
                leaf = _Node(tuple(ids[pos:]), keys[:, :, pos:].clone(),
                             values[:, :, pos:].clone(), node)
                leaf.used = stamp
                node.children[ids[pos]] = leaf
                self.nbytes += leaf.nbytes
                break
            n = common_length(child.tokens, ids, pos)
            if n < len(child.tokens):  # split child after its first n tokens
                head = _Node(child.tokens[:n], child.keys[:, :, :n].clone(),
                             child.values[:, :, :n].clone(), node)
                before = child.nbytes
                child.tokens = child.tokens[n:]
                child.keys = child.keys[:, :, n:].clone()
                child.values = child.values[:, :, n:].clone()
                child.parent = head
                head.children[child.tokens[0]] = child
                node.children[head.tokens[0]] = head
                self.nbytes += head.nbytes + child.nbytes - before
                child = head
            child.used = stamp
            pos += n
            node = child
        self._evict()

    def _evict(self) -> None:
        while self.nbytes > self.max_bytes:
            leaves = [n for n in self._nodes() if not n.children]
            if not leaves:
                break
            oldest = min(leaves, key=lambda n: n.used)
            del oldest.parent.children[oldest.tokens[0]]
            self.nbytes -= oldest.nbytes

    def _nodes(self):
        stack = list(self.root.children.values())
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())

    def __len__(self) -> int:
        """Tokens held."""
        return sum(len(n.tokens) for n in self._nodes())
