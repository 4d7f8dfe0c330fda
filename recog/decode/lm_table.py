"""A word or character n-gram LM as the compiled decoder reads it: one open-addressing hash table
(context * units + unit) -> (ln p, next state) with back-off through parent states (numba)."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

LM_ENTRY_DTYPE = np.dtype([("key", np.int64), ("logp", np.float32), ("next", np.int32)])
LM_STATE_DTYPE = np.dtype([("backoff", np.float32), ("parent", np.int32)])
_HASH = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(29)


@njit(cache=True, inline="always")
def hash_slot(key: int, mask: int) -> int:
    mixed = np.uint64(key) * _HASH
    return np.int64((mixed ^ (mixed >> _SHIFT)) & np.uint64(mask))


@njit(cache=True, nogil=True)
def build_table(entry_context, entry_unit, entry_logp, entry_next, n_units):
    """Open addressing, load <= 1/2, one 16-byte record per slot (a lookup reads one cache line):
    key context * n_units + unit (-1: empty), ln p, next state."""
    size = 2
    while size < 2 * len(entry_context) + 2:
        size *= 2
    table = np.zeros(size, LM_ENTRY_DTYPE)
    for slot in range(size):
        table[slot].key = -1
    mask = size - 1
    for entry in range(len(entry_context)):
        key = np.int64(entry_context[entry]) * n_units + entry_unit[entry]
        slot = hash_slot(key, mask)
        while table[slot].key != -1 and table[slot].key != key:
            slot = (slot + 1) & mask
        table[slot].key, table[slot].logp, table[slot].next = key, entry_logp[entry], entry_next[entry]
    return table


@njit(cache=True, inline="always")
def lm_lookup(table, n_units, states, unk_logp, state, unit):
    mask = len(table) - 1
    total = 0.0
    while True:
        key = np.int64(state) * n_units + unit
        slot = hash_slot(key, mask)
        while True:
            found = table[slot].key
            if found == key:
                return total + table[slot].logp, np.int64(table[slot].next)
            if found == -1:
                break
            slot = (slot + 1) & mask
        if state == 0:
            return total + unk_logp, np.int64(0)
        total += states[state].backoff  # back off: the state's weight, then its parent (shorter) history
        state = np.int64(states[state].parent)


@njit(cache=True, nogil=True)
def lm_score(lm, state, unit):
    """(ln p(unit | state), next state) in `lm` (LMTables), backing off through shorter histories;
    unknown -> <unk>."""
    return lm_lookup(lm.table, lm.n_units, lm.states, lm.unk_logp, state, unit)


LMTables = namedtuple("LMTables", "table n_units states unk_logp")
LMTables.__doc__ = """A word or character n-gram LM as `lm_score` reads it: the open-addressing table
(context * n_units + unit) -> (ln p, next state), the number of units, per state (backoff weight,
parent state), and ln p(<unk>)."""
