"""The compiled CTC prefix beam search of `recog.decode.ctc` (numba).

One compiled call searches a whole batch; beam entries are prefix-tree nodes carrying LM, lexicon and
hotword state. Design, pruning and data layout: docs/decoding.md."""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit

from recog.decode.lm_table import hash_slot, lm_lookup

NEG_INF = -np.inf
MODE_NONE, MODE_WORD, MODE_CHAR = 0, 1, 2
# node columns: integers (STAMP: the step on which the node was last in the beam, SLOT: where)
# END_STATE, END_FIXED: the LM state and fixed score after a space closes the node's word (computed
# once per node, -1 until then: a word LM lookup misses the cache, and an entry tries a space each frame)
PARENT, TOKEN, FRAME, LM_STATE, LEX, HOT, STAMP, SLOT, END_STATE = range(9)
INT_COLUMNS = 9
# node columns: floats (fixed: the settled LM/lexicon/hotword score; bonus: fixed + look-ahead)
FIXED, BONUS, END_FIXED = range(3)
FLOAT_COLUMNS = 3
LM_CACHE_DTYPE = np.dtype([("key", np.int64), ("next", np.int64), ("logp", np.float64)])
# recent word LM lookups, direct-mapped (96 KB; prefixes in a beam share histories, and a batch call keeps
# it across utterances). A slot holds key + 1, so a zeroed slot is empty.
LM_CACHE_SIZE = 4096
TRIE_EDGE_DTYPE = np.dtype([("token", np.int32), ("child", np.int32), ("smear", np.float64)])


def _softplus_table(steps_per_unit: int, span: float) -> np.ndarray:
    """log(1 + exp(-d)) and its derivative at d = 0, 1/steps, ..., span (+1 row for interpolation)."""
    d = np.arange(int(span * steps_per_unit) + 2) / steps_per_unit
    return np.stack([np.log1p(np.exp(-d)), -1.0 / (1.0 + np.exp(d))], axis=1)


_SOFTPLUS_STEPS = 64
_SOFTPLUS = _softplus_table(_SOFTPLUS_STEPS, 36.0)  # a compile-time constant of the kernels (37 KB)


@njit(cache=True, inline="always")
def _logaddexp(a, b):
    """ln(e^a + e^b). log1p(exp(-d)) by cubic Hermite interpolation in a table (error < 1e-10; two libm
    calls cost ~9% of a search)."""
    if a < b:
        a, b = b, a
    d = a - b
    if b == NEG_INF or d > 36.0:  # exp(-36) is below float64 resolution
        return a
    x = d * _SOFTPLUS_STEPS
    i = int(x)
    u = x - i
    f0, g0 = _SOFTPLUS[i, 0], _SOFTPLUS[i, 1] / _SOFTPLUS_STEPS
    f1, g1 = _SOFTPLUS[i + 1, 0], _SOFTPLUS[i + 1, 1] / _SOFTPLUS_STEPS
    u2 = u * u
    u3 = u2 * u
    return a + (2 * u3 - 3 * u2 + 1) * f0 + (u3 - 2 * u2 + u) * g0 + (3 * u2 - 2 * u3) * f1 + (u3 - u2) * g1


@njit(cache=True, inline="always")
def _sift_down(heap, n, at):
    """Restore the min-heap property of heap[:n] below position `at`."""
    value = heap[at]
    while True:
        child = 2 * at + 1
        if child >= n:
            break
        if child + 1 < n and heap[child + 1] < heap[child]:
            child += 1
        if heap[child] >= value:
            break
        heap[at] = heap[child]
        at = child
    heap[at] = value


@njit(cache=True, inline="always")
def _heap_offer(heap, n, size, value):
    """Keep the `size` largest values offered so far in the min-heap heap[:n]; returns the new n."""
    if n < size:
        at = n
        while at > 0:  # sift up
            parent = (at - 1) // 2
            if heap[parent] <= value:
                break
            heap[at] = heap[parent]
            at = parent
        heap[at] = value
        return n + 1
    if value > heap[0]:
        heap[0] = value
        _sift_down(heap, n, 0)
    return n


@njit(cache=True)
def _grow(ints, floats, capacity):
    bigger_ints = np.empty((capacity, INT_COLUMNS), np.int32)
    bigger_floats = np.empty((capacity, FLOAT_COLUMNS), np.float64)
    bigger_ints[: len(ints)] = ints
    bigger_floats[: len(floats)] = floats
    return bigger_ints, bigger_floats


@njit(cache=True)
def _grow_output(array, needed):
    if needed <= len(array):
        return array
    bigger = np.empty(max(needed, 2 * len(array)), array.dtype)
    bigger[: len(array)] = array
    return bigger


# The search's inputs and work arrays, by name. Numba passes named tuples unboxed (as plain tuples).
# `_search` takes each array out once per utterance: taking one out of a tuple inside a loop costs
# atomic reference counting. For the same reason the frame loop is one function: split into steps
# that take arrays, it ran 5-15% slower on the synthetic benchmark whether the steps were inlined
# (an inlined body counts references to each array it is handed) or called once per frame.
Scorer = namedtuple(
    "Scorer",
    "mode lm lm_weight word_score unk_score has_lexicon token_unit lex_nodes lex_edges "
    "hot_goto hot_partial hot_output space root_lm eos margin",
)
Scorer.__doc__ = """What scores a prefix besides the acoustics: mode (MODE_NONE/WORD/CHAR), lm (LMTables),
the weights, whether a lexicon was given, the LM unit of each token (character LMs), the lexicon trie
(per node: first edge, edge count, word id or -1, 0; per edge a TRIE_EDGE_DTYPE record, see
`ctc._packed_trie`), the hotword automaton (goto table, partial-match bonus and output bonus per
state), the space token (-1: none), the LM's start state and </s> unit, and `margin`, the most one
token can raise a prefix's bonus (it bounds which extensions can make the beam)."""
Beam = namedtuple("Beam", "node blank token last parent totals reach")
Beam.__doc__ = """Per beam entry: its node, ln p of its paths ending in blank and in its last token, that
token, the slot of its parent prefix in the beam (-1: not there), ln p of all its paths, and the best
bonus a child of it can reach."""
Candidates = namedtuple("Candidates", "node parent token lm lex hot fixed bonus blank end score total")
Candidates.__doc__ = """Per candidate for the next beam (the entries first, then new prefixes): its node
(-1 until a new prefix makes the beam), parent entry and token, the child's LM state, lexicon node and
hotword state, fixed score and bonus, ln p of its paths ending in blank and in the token, its score
(paths + bonus) and ln p of all its paths."""
Work = namedtuple("Work", "beam cand scratch child_slot tokens final heap lm_cache")
Work.__doc__ = """Everything a search writes besides the node tables, allocated once per batch call:
the beam, the candidates, scratch, (entry, token) -> slot of that child in the beam (-1: none), the
tokens tried this frame, the complete scores of the last beam, the heap of the best candidate scores,
and the cache of recent word LM lookups."""


@njit(cache=True)
def _new_work(beam, vocab):
    most = beam * vocab + beam  # every entry extended by every token, and the entries themselves
    entries = Beam(
        np.zeros(beam, np.int32),
        np.zeros(beam, np.float64),
        np.full(beam, NEG_INF),
        np.zeros(beam, np.int32),
        np.full(beam, -1, np.int32),
        np.zeros(beam, np.float64),
        np.empty(beam, np.float64),
    )
    ints, floats = np.empty(most, np.int32), np.empty(most, np.float64)
    cand = Candidates(
        ints, np.empty_like(ints), np.empty_like(ints), np.empty_like(ints), np.empty_like(ints),
        np.empty_like(ints), floats, np.empty_like(floats), np.empty_like(floats), np.empty_like(floats),
        np.empty_like(floats), np.empty_like(floats),
    )  # fmt: skip
    return Work(
        entries,
        cand,
        np.empty(most, np.float64),
        np.full(beam * vocab, -1, np.int32),
        np.empty(vocab, np.int32),
        np.empty(beam, np.float64),
        np.empty(beam, np.float64),
        np.zeros(LM_CACHE_SIZE, LM_CACHE_DTYPE),
    )


@njit(cache=True, nogil=True)
def beam_search(
    log_probs, offsets, beam, token_min_logp, token_max, blank_skip_logp, beam_prune, nbest, scorer,
    frame_seconds=0.0,
):  # fmt: skip
    """CTC prefix beam search over a batch: utterance u is rows offsets[u]:offsets[u + 1] of the
    (frames, vocab) log-probs (blank = 0); `scorer` is a Scorer. One compiled call for the batch;
    work arrays are shared.

    Returns flat arrays: per utterance how many hypotheses (none for an empty one); per hypothesis its
    total score, token count and word count; per token its id, the frame it was first emitted on and
    its posterior there; per word (tokens split on spaces) its first and end token within the
    hypothesis, its first and end frame (one past its last character's), its start and end time
    (frames times frame_seconds, to the millisecond) and its mean posterior (to 4 digits)."""
    n_utterances = len(offsets) - 1
    capacity = 1024
    ints = np.empty((capacity, INT_COLUMNS), np.int32)
    floats = np.empty((capacity, FLOAT_COLUMNS), np.float64)
    work = _new_work(beam, log_probs.shape[1])
    space = scorer.space
    counts = np.zeros(n_utterances, np.int32)
    scores = np.empty(n_utterances * nbest, np.float64)
    lengths = np.zeros(n_utterances * nbest, np.int32)
    n_words = np.zeros(n_utterances * nbest, np.int32)
    out_tokens = np.empty(1024, np.int32)
    out_frames = np.empty(1024, np.int32)
    out_probs = np.empty(1024, np.float64)
    word_ints = np.empty(4 * 256, np.int32)  # per word: first token, end token, first frame, end frame
    word_conf = np.empty(256, np.float64)
    word_times = np.empty(2 * 256, np.float64)
    n_hyps = n_tokens_out = n_words_out = 0
    for u in range(n_utterances):
        utterance = log_probs[offsets[u] : offsets[u + 1]]
        if len(utterance) == 0:
            continue
        ints, floats, n_best = _search(
            utterance,
            beam,
            token_min_logp,
            token_max,
            blank_skip_logp,
            beam_prune,
            scorer,
            ints,
            floats,
            work,
        )
        beam_node, final = work.beam.node, work.final
        order = np.argsort(-final[:n_best])[: min(nbest, n_best)]
        counts[u] = len(order)
        for rank in range(len(order)):
            node, length = beam_node[order[rank]], 0
            while node > 0:
                length += 1
                node = ints[node, PARENT]
            out_tokens = _grow_output(out_tokens, n_tokens_out + length)
            out_frames = _grow_output(out_frames, n_tokens_out + length)
            out_probs = _grow_output(out_probs, n_tokens_out + length)
            position, node = n_tokens_out + length - 1, beam_node[order[rank]]
            while node > 0:
                token, frame = ints[node, TOKEN], ints[node, FRAME]
                out_tokens[position], out_frames[position] = token, frame
                out_probs[position] = math.exp(utterance[frame, token])
                position -= 1
                node = ints[node, PARENT]
            # words: runs of tokens between spaces
            begin, words = 0, 0
            for end in range(length + 1):
                if end < length and out_tokens[n_tokens_out + end] != space:
                    continue
                if end > begin:
                    word_ints = _grow_output(word_ints, 4 * (n_words_out + words + 1))
                    word_conf = _grow_output(word_conf, n_words_out + words + 1)
                    word_times = _grow_output(word_times, 2 * (n_words_out + words + 1))
                    total = 0.0
                    for k in range(begin, end):
                        total += out_probs[n_tokens_out + k]
                    at = 4 * (n_words_out + words)
                    first, stop = out_frames[n_tokens_out + begin], out_frames[n_tokens_out + end - 1] + 1
                    word_ints[at], word_ints[at + 1] = begin, end
                    word_ints[at + 2], word_ints[at + 3] = first, stop
                    # rounded as numpy's round does it: scaled, to the nearest even integer, scaled back
                    word_conf[n_words_out + words] = np.rint(total / (end - begin) * 1e4) / 1e4
                    at = 2 * (n_words_out + words)
                    word_times[at] = np.rint(first * frame_seconds * 1e3) / 1e3
                    word_times[at + 1] = np.rint(stop * frame_seconds * 1e3) / 1e3
                    words += 1
                begin = end + 1
            scores[n_hyps], lengths[n_hyps], n_words[n_hyps] = final[order[rank]], length, words
            n_hyps += 1
            n_tokens_out += length
            n_words_out += words
    return (
        counts,
        scores[:n_hyps],
        lengths[:n_hyps],
        n_words[:n_hyps],
        out_tokens[:n_tokens_out],
        out_frames[:n_tokens_out],
        out_probs[:n_tokens_out],
        word_ints[: 4 * n_words_out].reshape((n_words_out, 4)),
        word_times[: 2 * n_words_out].reshape((n_words_out, 2)),
        word_conf[:n_words_out],
    )


@njit(cache=True, nogil=True)
def _search(
    log_probs, beam, token_min_logp, token_max, blank_skip_logp, beam_prune, scorer, ints, floats, work
):
    """One utterance. Leaves the final beam in work (its nodes, their complete scores) and returns the
    node tables (grown if need be) and the beam's size."""
    mode, lm_weight, word_score, unk_score = (
        scorer.mode,
        scorer.lm_weight,
        scorer.word_score,
        scorer.unk_score,
    )
    has_lexicon, space, margin = scorer.has_lexicon, scorer.space, scorer.margin
    token_unit, lex_nodes, lex_edges = scorer.token_unit, scorer.lex_nodes, scorer.lex_edges
    hot_goto, hot_partial, hot_output = scorer.hot_goto, scorer.hot_partial, scorer.hot_output
    table, n_units, states, unk_logp = scorer.lm
    entries, cand = work.beam, work.cand
    beam_node, beam_blank, beam_token, beam_last = entries.node, entries.blank, entries.token, entries.last
    beam_parent, totals, reach = entries.parent, entries.totals, entries.reach
    cand_node, cand_parent, cand_token = cand.node, cand.parent, cand.token
    cand_lm, cand_lex, cand_hot, cand_fixed, cand_bonus = cand.lm, cand.lex, cand.hot, cand.fixed, cand.bonus
    cand_blank, cand_end, cand_score, cand_total = cand.blank, cand.end, cand.score, cand.total
    scratch, child_slot, tokens, final = work.scratch, work.child_slot, work.tokens, work.final
    heap, lm_cache = work.heap, work.lm_cache
    frames, vocab = log_probs.shape
    has_trie = len(lex_nodes) > 0
    unk_lookahead = lm_weight * unk_logp + (unk_score if has_lexicon else 0.0)
    unk_gain = max(0.0, unk_score) if has_lexicon else 0.0
    # the most a space can raise a prefix's fixed score (LM log-probs are <= 0)
    space_gain = max(0.0, word_score) + unk_gain + margin
    capacity = len(ints)
    root_hot = hot_goto[0, space] if space >= 0 else 0
    ints[0, PARENT], ints[0, TOKEN], ints[0, FRAME], ints[0, LM_STATE] = -1, space, -1, scorer.root_lm
    ints[0, LEX], ints[0, HOT], ints[0, STAMP], ints[0, SLOT] = 0, root_hot, 0, 0
    ints[0, END_STATE] = -1
    floats[0, FIXED], floats[0, BONUS] = 0.0, hot_partial[root_hot]
    count = 1
    beam_node[:] = 0
    beam_blank[:] = 0.0
    beam_token[:] = NEG_INF
    beam_last[:] = space
    beam_parent[:] = -1
    beam_size = 1
    totals[:] = 0.0
    skipped, n_skipped, step = 0.0, 0, 0
    for t in range(frames):
        blank_logp = log_probs[t, 0]
        if blank_logp >= blank_skip_logp:  # blank near-certain: only the blank transition
            skipped += blank_logp
            n_skipped += 1
            continue
        if n_skipped:
            for i in range(beam_size):
                totals[i] += skipped
                beam_blank[i], beam_token[i] = totals[i], NEG_INF
            skipped, n_skipped = 0.0, 0
        # Stays: blank, the last token again, or a second space (spaces never double)
        top = NEG_INF
        for i in range(beam_size):
            node, blank_end, token_end, last = beam_node[i], beam_blank[i], beam_token[i], beam_last[i]
            total = totals[i]
            stay_blank = total + blank_logp
            stay_token = NEG_INF
            if last > 0:
                stay_token = token_end + log_probs[t, last]
                if last == space:
                    stay_token = _logaddexp(stay_token, blank_end + log_probs[t, last])
            bonus, fixed = floats[node, BONUS], floats[node, FIXED]
            cand_node[i] = node
            cand_blank[i], cand_end[i], cand_bonus[i] = stay_blank, stay_token, bonus
            # the best bonus any child of this entry can have (a space is bounded separately)
            best_child = bonus
            if mode == MODE_WORD and ints[node, LEX] >= 0:
                best_child = max(bonus, fixed + unk_lookahead)
            reach[i] = best_child + margin + unk_gain
            top = max(top, total + max(reach[i], fixed + space_gain))
            if beam_parent[i] >= 0:
                child_slot[beam_parent[i] * vocab + last] = i
        # An entry whose prefix's parent is in the beam too gains the parent's paths extended by its
        # last token, whatever the pruning below (only new prefixes are pruned)
        for i in range(beam_size):
            parent = beam_parent[i]
            if parent < 0:
                continue
            last = beam_last[i]
            share = (beam_blank[parent] if last == beam_last[parent] else totals[parent]) + log_probs[t, last]
            if share > totals[i]:  # re-timed if these paths outweigh its earlier ones
                ints[beam_node[i], FRAME] = t
            cand_end[i] = _logaddexp(cand_end[i], share)
        # The stays' exact scores open a min-heap of the beam best candidates so far: nothing under
        # its top (once it holds `beam`) or beam_prune under the best so far can make the beam.
        best = NEG_INF
        for k in range(beam_size):
            cand_total[k] = _logaddexp(cand_blank[k], cand_end[k])
            cand_score[k] = cand_total[k] + cand_bonus[k]
            heap[k] = cand_score[k]
            best = max(best, cand_score[k])
        n_heap = beam_size
        for k in range(n_heap // 2 - 1, -1, -1):
            _sift_down(heap, n_heap, k)
        floor = best - beam_prune
        if n_heap == beam:
            floor = max(floor, heap[0])
        # tokens no entry can extend with and stay above the floor are not tried at all; the rest
        # likeliest first (insertion sort: few candidates), so an entry stops at its first token that
        # cannot clear the floor
        token_floor = max(token_min_logp, floor - top)
        n_tokens = 0
        for c in range(1, vocab):
            if log_probs[t, c] >= token_floor:
                tokens[n_tokens] = c
                n_tokens += 1
        for i in range(1, n_tokens):
            c = tokens[i]
            j = i - 1
            while j >= 0 and log_probs[t, tokens[j]] < log_probs[t, c]:
                tokens[j + 1] = tokens[j]
                j -= 1
            tokens[j + 1] = c
        n_tokens = min(n_tokens, token_max)
        # Extensions by one token to prefixes not in the beam: candidates if they can clear the floor,
        # which rises as candidates come in. A space has its own bound, so it goes first.
        for j in range(n_tokens):
            if tokens[j] == space:
                for k in range(j, 0, -1):
                    tokens[k] = tokens[k - 1]
                tokens[0] = space
                break
        n_cand = beam_size
        for i in range(beam_size):
            node, blank_end, total, last = beam_node[i], beam_blank[i], totals[i], beam_last[i]
            fixed, entry_reach = floats[node, FIXED], reach[i]
            for j in range(n_tokens):
                c = tokens[j]
                source = total
                if c == last:
                    if c == space:
                        continue
                    source = blank_end
                share = source + log_probs[t, c]
                if child_slot[i * vocab + c] >= 0:  # in the beam already (merged above)
                    continue
                if share + (fixed + space_gain if c == space else entry_reach) < floor:
                    if c != space and source == total:  # the tokens after this one score lower still
                        break
                    continue
                # the child's LM state, lexicon node, hotword state and scores
                lm_state, lex, hot = ints[node, LM_STATE], ints[node, LEX], ints[node, HOT]
                child_fixed, smear = fixed, 0.0
                if c == space and ints[node, END_STATE] >= 0:
                    lm_state, child_fixed, lex = ints[node, END_STATE], floats[node, END_FIXED], 0
                elif c == space:  # a word ends: lexicon, LM and insertion score
                    word = -1
                    if lex >= 0 and has_trie:
                        word = lex_nodes[lex, 2]
                        if word < 0 and has_lexicon:  # a prefix of lexicon words, not one itself
                            child_fixed += unk_score
                    if mode == MODE_WORD:
                        key = np.int64(lm_state) * n_units + max(word, 0)
                        cached = lm_cache[hash_slot(key, len(lm_cache) - 1)]
                        if cached.key != key + 1:
                            logp, next_state = lm_lookup(
                                table, n_units, states, unk_logp, lm_state, max(word, 0)
                            )
                            cached.key, cached.logp, cached.next = key + 1, logp, next_state
                        lm_state = cached.next
                        child_fixed += lm_weight * cached.logp
                    child_fixed += word_score
                    ints[node, END_STATE], floats[node, END_FIXED] = lm_state, child_fixed
                    lex = 0
                elif has_trie and lex >= 0:
                    child = -1
                    first, n_edges = lex_nodes[lex, 0], lex_nodes[lex, 1]
                    if n_edges == vocab:
                        child, smear = np.int64(lex_edges[first + c].child), lex_edges[first + c].smear
                    else:
                        for k in range(first, first + n_edges):
                            if lex_edges[k].token == c:
                                child, smear = np.int64(lex_edges[k].child), lex_edges[k].smear
                                break
                    if child < 0 and has_lexicon:
                        child_fixed += unk_score
                    lex = child
                if mode == MODE_CHAR:
                    logp, lm_state = lm_lookup(table, n_units, states, unk_logp, lm_state, token_unit[c])  # fmt: skip
                    child_fixed += lm_weight * logp
                hot = hot_goto[hot, c]
                child_fixed += hot_output[hot]
                child_bonus = child_fixed + hot_partial[hot]
                if mode == MODE_WORD and lex != 0:
                    child_bonus += lm_weight * (smear if lex > 0 else unk_logp)
                score = share + child_bonus
                if score < floor:
                    continue
                cand_node[n_cand], cand_parent[n_cand], cand_token[n_cand] = -1, i, c
                cand_lm[n_cand], cand_lex[n_cand], cand_hot[n_cand] = lm_state, lex, hot
                cand_fixed[n_cand], cand_bonus[n_cand] = child_fixed, child_bonus
                cand_blank[n_cand], cand_end[n_cand], cand_score[n_cand] = NEG_INF, share, score
                cand_total[n_cand] = share
                n_cand += 1
                n_heap = _heap_offer(heap, n_heap, beam, score)
                best = max(best, score)
                floor = best - beam_prune
                if n_heap == beam:
                    floor = max(floor, heap[0])
        for i in range(beam_size):
            if beam_parent[i] >= 0:
                child_slot[beam_parent[i] * vocab + beam_last[i]] = -1
        # Select the beam: everything within beam_prune of the best, at most `beam` of them (the
        # heap's top is the beam-th best score of all candidates)
        cut = best - beam_prune
        if n_cand > beam:
            cut = max(cut, heap[0])
        n_above = 0  # candidates strictly above the cut all fit; ties at the cut fill what is left
        for k in range(n_cand):
            n_above += cand_score[k] > cut
        ties = beam - n_above
        if count + n_cand > capacity:
            capacity = 2 * (count + n_cand)
            ints, floats = _grow(ints, floats, capacity)
        step += 1
        size = 0
        for k in range(n_cand):
            keep = cand_score[k] > cut
            if not keep and cand_score[k] == cut and ties > 0:
                keep, ties = True, ties - 1
            if not keep:
                continue
            node = cand_node[k]
            if node < 0:  # a new prefix: now it becomes a node
                node = count
                count += 1
                ints[node, PARENT], ints[node, TOKEN] = beam_node[cand_parent[k]], cand_token[k]
                ints[node, FRAME], ints[node, END_STATE] = t, -1
                ints[node, LM_STATE], ints[node, LEX], ints[node, HOT] = cand_lm[k], cand_lex[k], cand_hot[k]
                floats[node, FIXED], floats[node, BONUS] = cand_fixed[k], cand_bonus[k]
            ints[node, STAMP], ints[node, SLOT] = step, size
            scratch[size] = cand_blank[k]
            cand_score[size] = cand_end[k]
            cand_total[size] = cand_total[k]
            cand_node[size] = node
            size += 1
        for i in range(size):
            node = cand_node[i]
            beam_node[i], beam_blank[i] = node, scratch[i]
            beam_token[i], totals[i] = cand_score[i], cand_total[i]
            beam_last[i] = ints[node, TOKEN]
            parent = ints[node, PARENT]
            beam_parent[i] = ints[parent, SLOT] if parent >= 0 and ints[parent, STAMP] == step else -1
        beam_size = size
    for i in range(beam_size):  # complete hypotheses: the last word closed, then </s>
        node = beam_node[i]
        fixed, lm_state = floats[node, FIXED], ints[node, LM_STATE]
        if node != 0 and ints[node, TOKEN] != space:  # unless the prefix ends in a space
            if ints[node, END_STATE] < 0:
                _end_word(
                    node, ints, floats, mode, lm_weight, word_score, unk_score, has_lexicon, lex_nodes,
                    table, n_units, states, unk_logp, lm_cache,
                )  # fmt: skip
            lm_state, fixed = ints[node, END_STATE], floats[node, END_FIXED]
            if space >= 0:
                fixed += hot_output[hot_goto[ints[node, HOT], space]]
        if mode != MODE_NONE:
            fixed += lm_weight * lm_lookup(table, n_units, states, unk_logp, lm_state, scorer.eos)[0]
        final[i] = totals[i] + skipped + fixed
    return ints, floats, beam_size


@njit(cache=True, inline="always")
def _end_word(
    node, ints, floats, mode, lm_weight, word_score, unk_score, has_lexicon, lex_nodes, table, n_units,
    states, unk_logp, lm_cache,
):  # fmt: skip
    """Score the end of node's word (a space, or the end of the utterance) into its END_STATE and
    END_FIXED: lexicon (unknown-word score), word LM through the cache of recent lookups, insertion
    score. The extension loop in `_search` does the same inline (as a call there it cost 10%)."""
    lm_state, lex, fixed = ints[node, LM_STATE], ints[node, LEX], floats[node, FIXED]
    word = -1
    if lex >= 0 and len(lex_nodes) > 0:
        word = lex_nodes[lex, 2]
        if word < 0 and has_lexicon:  # a prefix of lexicon words, not one itself
            fixed += unk_score
    if mode == MODE_WORD:
        key = np.int64(lm_state) * n_units + max(word, 0)
        cached = lm_cache[hash_slot(key, len(lm_cache) - 1)]
        if cached.key != key + 1:
            logp, next_state = lm_lookup(table, n_units, states, unk_logp, lm_state, max(word, 0))
            cached.key, cached.logp, cached.next = key + 1, logp, next_state
        lm_state = cached.next
        fixed += lm_weight * cached.logp
    ints[node, END_STATE], floats[node, END_FIXED] = lm_state, fixed + word_score
