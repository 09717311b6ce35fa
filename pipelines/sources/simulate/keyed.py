"""Random draws that are a function of what they are for (common random numbers for the stepped world).

A customer's answer to a recommendation, and what an accepted action then changes, are drawn from numbers keyed by
(seed, purpose, customer number, night, action, occurrence), not taken in turn from one stream per chunk and day.
So two runs of the same world with the same seed whose exports differ (learning on and off, a champion and a
challenger) give the same customer answering the same offer on the same night the same numbers, whatever else
either export holds: the difference between the runs is what the policies did, not where a shared stream happened
to be. Marginally nothing changes: each key's numbers are uniform and independent of every other key's.

`uniforms` is vectorised (a splitmix64 hash of the key words, in numpy uint64 arithmetic that wraps mod 2**64):
one row per key, `count` numbers per row. `generator` gives a numpy Generator (Philox keyed by the same hash) for
the few draws whose number depends on the row (the effects of one accepted action).
"""
from __future__ import annotations

import hashlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that scrambles every bit."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def text_words(values: np.ndarray | list[str]) -> np.ndarray:
    """A stable 64-bit word per text (blake2b, hashed once per distinct value)."""
    arr = np.asarray(values, dtype=object)
    if not len(arr):
        return np.zeros(0, dtype=np.uint64)
    distinct, inverse = np.unique(arr.astype(str), return_inverse=True)
    words = np.array([int.from_bytes(hashlib.blake2b(v.encode("utf-8"), digest_size=8).digest(), "little")
                      for v in distinct], dtype=np.uint64)
    return words[inverse.reshape(-1)]


def _word(part: int | str | np.ndarray) -> np.ndarray:
    if isinstance(part, str):
        return text_words([part])
    arr = np.asarray(part)
    if arr.dtype == object or arr.dtype.kind in "US":
        return text_words(arr.reshape(-1))
    return np.atleast_1d(arr.astype(np.int64).view(np.uint64))


def key_hash(seed: int, *parts: int | str | np.ndarray) -> np.ndarray:
    """One 64-bit hash per row of the keys (scalars broadcast against the arrays)."""
    words = [_word(p) for p in parts]
    m = max((len(w) for w in words), default=1)
    with np.errstate(over="ignore"):
        h = _mix(np.full(m, np.uint64(seed & 0xFFFFFFFFFFFFFFFF)) + _GOLDEN)
        for w in words:
            h = _mix((h ^ w) + _GOLDEN)
    return h


def uniforms(count: int, seed: int, *parts: int | str | np.ndarray) -> np.ndarray:
    """(rows, count) uniform numbers in [0, 1), a function of the keys only."""
    h = key_hash(seed, *parts)
    with np.errstate(over="ignore"):
        steps = (np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN)[None, :]
        bits = _mix(h[:, None] + steps)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def generator(seed: int, *parts: int | str) -> np.random.Generator:
    """A numpy Generator for one key (Philox, keyed by the key's hash)."""
    return np.random.Generator(np.random.Philox(key=int(key_hash(seed, *parts)[0])))


def occurrence(*keys: np.ndarray) -> np.ndarray:
    """Per row, how many earlier rows have the same keys (0 for the first): tells repeated keys apart."""
    m = len(keys[0]) if keys else 0
    if not m:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(m),) + tuple(reversed(keys)))
    new = np.zeros(m, dtype=bool)
    new[0] = True
    for k in keys:
        s = np.asarray(k)[order]
        new[1:] |= s[1:] != s[:-1]
    start = np.maximum.accumulate(np.where(new, np.arange(m), 0))
    out = np.empty(m, dtype=np.int64)
    out[order] = np.arange(m) - start
    return out
