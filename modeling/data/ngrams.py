"""Keys of texts and of runs of token ids: what a contamination check compares (modeling.data.contamination) and
what prepare leaves out of a clean store (`Exclusion`). Every numba kernel over these keys is in this file: numba
keeps its cache per file, so a kernel elsewhere could keep a stale copy of `finish` or `PRIME`.

`text_key`: a document's text, case and whitespace folded, hashed to 64 bits. `ngram_keys`: every run of n token
ids, hashed to 64 bits by a rolling polynomial hash, then mixed (splitmix64's finaliser) so every bit of the key
depends on every id. Two different runs share a key with probability about 2^-64 per pair.
"""

from __future__ import annotations

import hashlib

import numba
import numpy as np

PRIME = np.uint64(0x100000001B3)  # FNV's 64-bit prime: odd, so the polynomial hash is a bijection per position


def text_key(text: str) -> int:
    """A document's text, case and whitespace folded, as 64 bits: the same document re-wrapped or re-cased by
    another distribution has the same key."""
    normal = " ".join(text.casefold().split())
    return int.from_bytes(hashlib.blake2b(normal.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


@numba.njit(cache=True)
def finish(h):
    """splitmix64's finaliser (every bit of the polynomial hash reaches every bit of the key); never 0, the empty
    slot's mark."""
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h if h != np.uint64(0) else np.uint64(1)


@numba.njit(cache=True)
def _top(n):
    """PRIME^(n-1): the weight of the id that leaves the window."""
    top = np.uint64(1)
    for _ in range(n - 1):
        top *= PRIME
    return top


@numba.njit(cache=True)
def _first(tokens, start, n):
    """The polynomial hash of tokens[start : start + n] (ids + 1, so id 0 counts)."""
    h = np.uint64(0)
    for k in range(n):
        h = h * PRIME + np.uint64(tokens[start + k]) + np.uint64(1)
    return h


@numba.njit(cache=True)
def _roll(h, leaving, entering, top):
    """The window's hash moved on by one id: `leaving` drops out of the front, `entering` joins at the back."""
    return (h - (np.uint64(leaving) + np.uint64(1)) * top) * PRIME + np.uint64(entering) + np.uint64(1)


@numba.njit(cache=True)
def ngram_keys(tokens, n):
    """The key of every n-gram of `tokens`, in order (a rolling polynomial hash over the ids)."""
    count = tokens.shape[0] - n + 1
    keys = np.empty(max(count, 0), np.uint64)
    if count <= 0:
        return keys
    top = _top(n)
    h = _first(tokens, 0, n)
    keys[0] = finish(h)
    for i in range(1, count):
        h = _roll(h, tokens[i - 1], tokens[i + n - 1], top)
        keys[i] = finish(h)
    return keys


@numba.njit(cache=True)
def build_table(keys):
    """Open addressing over the distinct keys (key -> its position in `keys`), and a bitmap that answers most
    misses from the cache before the table is touched."""
    size = 16
    while size < 2 * keys.shape[0]:
        size *= 2
    slots = np.zeros(size, np.uint64)
    values = np.full(size, -1, np.int64)
    bits = 1 << 16
    while bits < 8 * keys.shape[0]:
        bits *= 2
    bitmap = np.zeros(bits // 64, np.uint64)
    for i in range(keys.shape[0]):
        key = keys[i]
        slot = np.int64(key & np.uint64(size - 1))
        while slots[slot] != np.uint64(0):
            slot = (slot + 1) & (size - 1)
        slots[slot] = key
        values[slot] = i
        bit = (key >> np.uint64(20)) & np.uint64(bits - 1)
        bitmap[bit >> np.uint64(6)] |= np.uint64(1) << (bit & np.uint64(63))
    return slots, values, bitmap


@numba.njit(cache=True)
def scan_batch(values, offsets, first_document, n, slots, table, bitmap, counts, holders):
    """Every n-gram of every document of one record batch looked up: `counts[k]` += occurrences of key k,
    `holders[k]`: the first document (numbered from `first_document`) that holds it."""
    size = slots.shape[0]
    bits = bitmap.shape[0] * 64
    top = _top(n)
    for d in range(offsets.shape[0] - 1):
        start, end = offsets[d], offsets[d + 1]
        if end - start < n:
            continue
        h = _first(values, start, n)
        for i in range(start, end - n + 1):
            if i > start:
                h = _roll(h, values[i - 1], values[i + n - 1], top)
            key = finish(h)
            bit = (key >> np.uint64(20)) & np.uint64(bits - 1)
            if not (bitmap[bit >> np.uint64(6)] >> (bit & np.uint64(63))) & np.uint64(1):
                continue
            slot = np.int64(key & np.uint64(size - 1))
            while slots[slot] != np.uint64(0):
                if slots[slot] == key:
                    k = table[slot]
                    counts[k] += 1
                    if holders[k] < 0:
                        holders[k] = first_document + d
                    break
                slot = (slot + 1) & (size - 1)


class Exclusion:
    """What prepare leaves out of a clean store: every evaluation document itself (by its text key) and every
    document sharing an n-token run with one. Sorted key arrays: small, and they travel to prepare's processes."""

    def __init__(self, n: int, keys: np.ndarray, text_keys: np.ndarray, documents: int):
        self.n, self.keys, self.text_keys, self.documents = n, keys, text_keys, documents

    def reason(self, ids, text: str) -> str | None:
        """Why this document is left out, or None to keep it."""
        if _holds(self.text_keys, np.array([text_key(text)], dtype=np.uint64)):
            return "an evaluation document"
        if len(self.keys) and _holds(self.keys, ngram_keys(np.asarray(ids, dtype=np.int64), self.n)):
            return f"shares a {self.n}-token run with an evaluation document"
        return None

    def fingerprint(self) -> str:
        digest = hashlib.blake2b(str(self.n).encode(), digest_size=8)
        digest.update(self.keys.tobytes())
        digest.update(self.text_keys.tobytes())
        return digest.hexdigest()


def find_keys(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position of each key in `sorted_keys`, whether it is there); positions of keys not there mean nothing."""
    if not len(sorted_keys):
        return np.zeros(len(keys), np.int64), np.zeros(len(keys), bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return at, sorted_keys[at] == keys


def _holds(sorted_keys: np.ndarray, keys: np.ndarray) -> bool:
    return bool(find_keys(sorted_keys, keys)[1].any())
