"""The compiled inner loops of `recog.decode.ctc`: n-gram lookup and CTC prefix beam search (numba).

Every prefix the search reaches is a node of a prefix tree. What depends only on the prefix (its
language model state, its place in the lexicon trie and the hotword automaton, its LM/lexicon/hotword
score) is computed once, when the node is created; a beam entry is a node and two acoustic log-probs
(paths ending in blank, and in the prefix's last token)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

NEG_INF = -np.inf
MODE_NONE, MODE_WORD, MODE_CHAR = 0, 1, 2
# node columns: integers
PARENT, TOKEN, FRAME, LM_STATE, LEX, HOT, CHILD, SIBLING, STAMP, KIN = range(10)
INT_COLUMNS = 10  # KIN: the step on which one of the node's children was in the beam
# node columns: floats (fixed: the settled LM/lexicon/hotword score; bonus: fixed + look-ahead)
FIXED, BONUS, BLANK_END, TOKEN_END, PREVIOUS = range(5)
FLOAT_COLUMNS = 5  # PREVIOUS: the node's total on the last step (while it is in the beam)
_HASH = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(29)


@njit(cache=True, inline="always")
def _slot(key: int, mask: int) -> int:
    mixed = np.uint64(key) * _HASH
    return np.int64((mixed ^ (mixed >> _SHIFT)) & np.uint64(mask))


@njit(cache=True, nogil=True)
def build_table(entry_context, entry_unit, n_units):
    """Open addressing, load <= 1/2: keys (context * n_units + unit, -1 empty) and entry indices."""
    size = 2
    while size < 2 * len(entry_context) + 2:
        size *= 2
    keys = np.full(size, -1, np.int64)
    values = np.zeros(size, np.int32)
    mask = size - 1
    for entry in range(len(entry_context)):
        key = np.int64(entry_context[entry]) * n_units + entry_unit[entry]
        slot = _slot(key, mask)
        while keys[slot] != -1 and keys[slot] != key:
            slot = (slot + 1) & mask
        keys[slot] = key
        values[slot] = entry
    return keys, values


@njit(cache=True, nogil=True)
def lm_score(lm, state, unit):
    """(ln p(unit | state), next state), backing off through shorter histories; unknown -> <unk>."""
    keys, values, n_units, entry_logp, entry_next, state_backoff, state_parent, unk_logp = lm
    mask = len(keys) - 1
    total = 0.0
    while True:
        key = np.int64(state) * n_units + unit
        slot = _slot(key, mask)
        while True:
            found = keys[slot]
            if found == key:
                entry = values[slot]
                return total + entry_logp[entry], np.int64(entry_next[entry])
            if found == -1:
                break
            slot = (slot + 1) & mask
        if state == 0:
            return total + unk_logp, np.int64(0)
        total += state_backoff[state]
        state = state_parent[state]


@njit(cache=True, inline="always")
def _logaddexp(a, b):
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


@njit(cache=True)
def _finish_word(scorer, lm_state, lex, fixed):
    """Score the word that a space (or the end) closes: LM, unknown-word penalty, insertion bonus."""
    mode, lm, lm_weight, word_score, unk_score, has_lexicon = scorer[:6]
    lex_word = scorer[11]
    word = -1
    if lex >= 0 and len(lex_word) > 0:
        word = lex_word[lex]
        if word < 0 and has_lexicon:  # a prefix of lexicon words, not one itself
            fixed += unk_score
    if mode == MODE_WORD:
        logp, lm_state = lm_score(lm, lm_state, max(word, 0))
        fixed += lm_weight * logp
    return fixed + word_score, lm_state


@njit(cache=True)
def _new_node(ints, floats, count, parent, token, frame, scorer):
    """Create the child of `parent` by `token`; its scores follow from the parent's state."""
    mode, lm, lm_weight, _, unk_score, has_lexicon, token_unit = scorer[:7]
    lex_start, lex_count, lex_token, lex_node, lex_word, lex_smear = scorer[7:13]
    hot_goto, hot_partial, hot_output, space = scorer[13:17]
    lm_state, lex, hot = ints[parent, LM_STATE], ints[parent, LEX], ints[parent, HOT]
    fixed = floats[parent, FIXED]
    if token == space:
        fixed, lm_state = _finish_word(scorer, lm_state, lex, fixed)
        lex = 0
    elif len(lex_start) > 0 and lex >= 0:
        child = -1
        for k in range(lex_start[lex], lex_start[lex] + lex_count[lex]):
            if lex_token[k] == token:
                child = lex_node[k]
                break
        if child < 0 and has_lexicon:
            fixed += unk_score
        lex = child
    if mode == MODE_CHAR:
        logp, lm_state = lm_score(lm, lm_state, token_unit[token])
        fixed += lm_weight * logp
    hot = hot_goto[hot, token]
    fixed += hot_output[hot]
    bonus = fixed + hot_partial[hot]
    if mode == MODE_WORD and lex != 0:
        bonus += lm_weight * (lex_smear[lex] if lex > 0 else lm[7])
    ints[count, PARENT], ints[count, TOKEN], ints[count, FRAME] = parent, token, frame
    ints[count, LM_STATE], ints[count, LEX], ints[count, HOT] = lm_state, lex, hot
    ints[count, CHILD], ints[count, SIBLING] = -1, ints[parent, CHILD]
    ints[count, STAMP], ints[count, KIN] = -1, -1
    ints[parent, CHILD] = count
    floats[count, FIXED], floats[count, BONUS] = fixed, bonus
    return count


@njit(cache=True)
def _final_score(ints, floats, node, scorer):
    """The settled score of a complete hypothesis: its last word closed, then </s>."""
    mode, lm, lm_weight = scorer[:3]
    hot_goto, hot_output, space, eos = scorer[13], scorer[15], scorer[16], scorer[18]
    fixed, lm_state = floats[node, FIXED], ints[node, LM_STATE]
    if node != 0 and ints[node, TOKEN] != space:
        fixed, lm_state = _finish_word(scorer, lm_state, ints[node, LEX], fixed)
        if space >= 0:
            fixed += hot_output[hot_goto[ints[node, HOT], space]]
    if mode != MODE_NONE:
        fixed += lm_weight * lm_score(lm, lm_state, eos)[0]
    return fixed


@njit(cache=True)
def _grow(ints, floats, capacity):
    bigger_ints = np.empty((capacity, INT_COLUMNS), np.int32)
    bigger_floats = np.empty((capacity, FLOAT_COLUMNS), np.float64)
    bigger_ints[: len(ints)] = ints
    bigger_floats[: len(floats)] = floats
    return bigger_ints, bigger_floats


@njit(cache=True, nogil=True)
def beam_search(log_probs, beam, token_min_logp, token_max, blank_skip_logp, beam_prune, nbest, scorer):
    """CTC prefix beam search over (time, vocab) log-probs (blank = 0).

    Returns the n best as (scores, lengths, tokens, frames): per hypothesis its total score, and
    its tokens with the frame each was first emitted on, concatenated."""
    frames, vocab = log_probs.shape
    space, root_lm = scorer[16], scorer[17]
    hot_goto = scorer[13]
    capacity = 4096
    ints = np.empty((capacity, INT_COLUMNS), np.int32)
    floats = np.empty((capacity, FLOAT_COLUMNS), np.float64)
    root_hot = hot_goto[0, space] if space >= 0 else 0
    ints[0, PARENT], ints[0, TOKEN], ints[0, FRAME], ints[0, LM_STATE] = -1, space, -1, root_lm
    ints[0, LEX], ints[0, HOT], ints[0, CHILD], ints[0, SIBLING] = 0, root_hot, -1, -1
    ints[0, STAMP], ints[0, KIN] = -1, -1
    floats[0, FIXED], floats[0, BONUS] = 0.0, scorer[14][root_hot]
    count = 1
    beam_nodes = np.zeros(beam, np.int32)
    beam_blank = np.zeros(beam, np.float64)
    beam_token = np.full(beam, NEG_INF)
    beam_size = 1
    tokens = np.empty(vocab, np.int32)
    totals = np.empty(beam, np.float64)
    mode, margin = scorer[0], scorer[19]
    touched = np.empty(beam * (vocab + 1), np.int32)
    scores = np.empty(beam * (vocab + 1), np.float64)
    skipped, n_skipped, step = 0.0, 0, 0
    for t in range(frames):
        row = log_probs[t]
        if row[0] >= blank_skip_logp:  # blank near-certain: only the blank transition
            skipped += row[0]
            n_skipped += 1
            continue
        if n_skipped:
            for i in range(beam_size):
                beam_blank[i] = _logaddexp(beam_blank[i], beam_token[i]) + skipped
                beam_token[i] = NEG_INF
            skipped, n_skipped = 0.0, 0
        # Pass 1: every beam entry stays (blank, its last token again, or a second space). These
        # are beam-many distinct candidates, so with a full beam the weakest of them bounds the cut
        # from below: an extension that cannot reach `floor` is never created.
        stay_best, stay_worst, top = NEG_INF, np.inf, NEG_INF
        for i in range(beam_size):
            node, blank_end, token_end = beam_nodes[i], beam_blank[i], beam_token[i]
            total = _logaddexp(blank_end, token_end)
            totals[i] = total
            floats[node, PREVIOUS] = total
            last = ints[node, TOKEN]
            ints[node, STAMP] = step
            stay_blank = total + row[0]
            stay_token = token_end + row[last] if last > 0 else NEG_INF
            if last == space and last > 0:  # spaces never double: a second one stays in the same prefix
                stay_token = _logaddexp(stay_token, blank_end + row[last])
            floats[node, BLANK_END], floats[node, TOKEN_END] = stay_blank, stay_token
            touched[i] = node
            bonus = floats[node, BONUS]
            stay = _logaddexp(stay_blank, stay_token) + bonus
            stay_best = max(stay_best, stay)
            stay_worst = min(stay_worst, stay)
            top = max(top, total + bonus)
        for i in range(beam_size):
            parent = ints[beam_nodes[i], PARENT]
            if parent >= 0 and ints[parent, STAMP] == step:
                ints[parent, KIN] = step
        n_touched = beam_size
        floor = stay_best - beam_prune
        if beam_size == beam:
            floor = max(floor, stay_worst)
        # tokens no hypothesis can extend with and stay above the floor are not tried at all
        token_floor = max(token_min_logp, floor - top - margin)
        n_tokens = 0
        for c in range(1, vocab):
            if row[c] >= token_floor or (c == space and mode == MODE_WORD and row[c] >= token_min_logp):
                tokens[n_tokens] = c
                n_tokens += 1
        if n_tokens > token_max:  # keep the token_max likeliest (insertion sort: few candidates)
            for i in range(1, n_tokens):
                c = tokens[i]
                j = i - 1
                while j >= 0 and row[tokens[j]] < row[c]:
                    tokens[j + 1] = tokens[j]
                    j -= 1
                tokens[j + 1] = c
            n_tokens = token_max
        if count + beam_size * n_tokens > capacity:
            capacity = 2 * (count + beam_size * n_tokens)
            ints, floats = _grow(ints, floats, capacity)
        # Pass 2: extensions by one token. A child in the beam always receives its share (merging);
        # others are created only if they can clear the floor (`margin`: the most any token can
        # raise a prefix's LM/lexicon/hotword bonus; a word LM re-scores at spaces, so those pass).
        for i in range(beam_size):
            node, blank_end, total = beam_nodes[i], beam_blank[i], totals[i]
            last = ints[node, TOKEN]
            reach = floats[node, BONUS] + margin
            for j in range(n_tokens):
                c = tokens[j]
                source = total
                if c == last:
                    if c == space:
                        continue
                    source = blank_end
                share = source + row[c]
                hopeless = share + reach < floor and not (c == space and mode == MODE_WORD)
                if hopeless and ints[node, KIN] != step:  # no child of this node is in the beam
                    continue
                child = ints[node, CHILD]
                while child >= 0 and ints[child, TOKEN] != c:
                    child = ints[child, SIBLING]
                if hopeless and (child < 0 or ints[child, STAMP] != step):
                    continue
                if child < 0:
                    child = _new_node(ints, floats, count, node, c, t, scorer)
                    count += 1
                if ints[child, STAMP] != step:
                    ints[child, STAMP] = step
                    ints[child, FRAME] = t  # its token is emitted now
                    floats[child, BLANK_END], floats[child, TOKEN_END] = NEG_INF, share
                    touched[n_touched] = child
                    n_touched += 1
                else:  # in the beam already: re-timed if the new paths outweigh the old ones
                    if share > floats[child, PREVIOUS]:
                        ints[child, FRAME] = t
                    floats[child, TOKEN_END] = _logaddexp(floats[child, TOKEN_END], share)
        best = NEG_INF
        for k in range(n_touched):
            node = touched[k]
            scores[k] = _logaddexp(floats[node, BLANK_END], floats[node, TOKEN_END]) + floats[node, BONUS]
            best = max(best, scores[k])
        cut = best - beam_prune
        if n_touched > beam:
            cut = max(cut, np.partition(scores[:n_touched], n_touched - beam)[n_touched - beam])
        beam_size = 0
        n_above = 0  # hypotheses strictly above the cut all fit; ties at the cut fill what is left
        for k in range(n_touched):
            n_above += scores[k] > cut
        ties = beam - n_above
        for k in range(n_touched):
            keep = scores[k] > cut
            if not keep and scores[k] == cut and ties > 0:
                keep, ties = True, ties - 1
            if keep:
                node = touched[k]
                beam_nodes[beam_size] = node
                beam_blank[beam_size] = floats[node, BLANK_END]
                beam_token[beam_size] = floats[node, TOKEN_END]
                beam_size += 1
        step += 1
    final = np.empty(beam_size, np.float64)
    for i in range(beam_size):
        acoustic = _logaddexp(beam_blank[i], beam_token[i]) + skipped
        final[i] = acoustic + _final_score(ints, floats, beam_nodes[i], scorer)
    order = np.argsort(-final)[: min(nbest, beam_size)]
    lengths = np.zeros(len(order), np.int32)
    for rank in range(len(order)):
        node = beam_nodes[order[rank]]
        while node > 0:
            lengths[rank] += 1
            node = ints[node, PARENT]
    out_tokens = np.empty(lengths.sum(), np.int32)
    out_frames = np.empty(lengths.sum(), np.int32)
    end = 0
    for rank in range(len(order)):
        end += lengths[rank]
        position, node = end - 1, beam_nodes[order[rank]]
        while node > 0:
            out_tokens[position], out_frames[position] = ints[node, TOKEN], ints[node, FRAME]
            position -= 1
            node = ints[node, PARENT]
    return final[order], lengths, out_tokens, out_frames
