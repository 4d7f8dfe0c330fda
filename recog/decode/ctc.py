"""recog's CTC prefix beam search: character or word n-gram LM fusion, a lexicon (unknown words
penalised, not banned), hotword boosting, n-best lists, word times and confidences. The search itself
is compiled (`recog.decode.kernels`); this module turns words, LMs and hotwords into its tables."""

from __future__ import annotations

import dataclasses
import gc
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from recog.decode.kernels import MODE_CHAR, MODE_NONE, MODE_WORD, TRIE_EDGE_DTYPE, Scorer, beam_search
from recog.decode.lm import BOS, EOS, SPACE, UNK, NGramLM
from recog.decode.lm_table import LM_ENTRY_DTYPE, LM_STATE_DTYPE, LMTables
from recog.decode.transcript import Transcript, Word
from recog.vocab import Vocab

Hotwords = Mapping[str, float] | Iterable[str | tuple[str, float]]


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """How wide and how greedy the search is; the defaults lose no accuracy on recog's models."""

    beam: int = 25
    token_min_logp: float = -8.0  # tokens less likely than this in a frame are not tried there
    token_max: int = 0  # at most this many tokens per frame (0: no limit)
    blank_skip_threshold: float = 0.999  # frames whose blank probability reaches this only extend blanks
    beam_prune: float = 20.0  # drop hypotheses this far (natural log) below the best
    nbest: int = 1


class CTCBeamDecoder:
    """Decode (time, vocab) CTC log-probs (blank = 0) into Transcripts, best first.

    lm: an `NGramLM` (word or char units) or a path to one (ARPA or saved); lm_weight scales its
    natural-log scores, word_score is added per word, unk_score per word outside `lexicon` (a word
    list or a file whose lines start with a word). Without a lexicon a word LM's vocabulary is used
    for look-ahead only. hotwords: phrases with a bonus (natural log) each time one is recognised;
    a bare phrase gets `hotword_weight`."""

    def __init__(
        self,
        vocab: Vocab,
        lm: NGramLM | str | Path | None = None,
        lexicon: Iterable[str] | str | Path | None = None,
        hotwords: Hotwords | None = None,
        *,
        beam: int = 25,
        lm_weight: float = 0.5,
        word_score: float = 0.0,
        unk_score: float = -10.0,
        hotword_weight: float = 8.0,
        token_min_logp: float = -8.0,
        token_max: int = 0,
        blank_skip_threshold: float = 0.999,
        beam_prune: float = 20.0,
        nbest: int = 1,
        frame_seconds: float = 0.03,
        workers: int = 1,
    ):
        self.vocab, self.frame_seconds, self.workers = vocab, frame_seconds, workers
        self.lm = NGramLM.load(lm) if isinstance(lm, (str, Path)) else lm
        self.space = vocab.tokens.index(" ") if vocab.word_separator else -1
        self.lexicon_words = _read_words(lexicon) if lexicon is not None else None
        self.lm_weight, self.word_score, self.unk_score = lm_weight, word_score, unk_score
        self.options = SearchOptions(beam, token_min_logp, token_max, blank_skip_threshold, beam_prune, nbest)
        self.hotwords = _hotword_weights(hotwords or {}, hotword_weight)
        self._trie = self._build_trie()
        self._automaton = _automaton(self.hotwords, vocab, self.space)
        self._scorer = self._build_scorer()

    def configure(self, **changes) -> CTCBeamDecoder:
        """Change weights (lm_weight, word_score, unk_score) or search options in place."""
        for name in ("lm_weight", "word_score", "unk_score"):
            if name in changes:
                setattr(self, name, float(changes.pop(name)))
        self.options = dataclasses.replace(self.options, **changes)
        self._scorer = self._build_scorer()
        return self

    # -- decoding -----------------------------------------------------------------------------
    def __call__(self, log_probs, lengths=None) -> list[Transcript]:
        """One Transcript per input: (time, vocab), (batch, time, vocab) with lengths, or a list (the
        `recog.decode.Decoder` protocol, and more)."""
        results = []
        for hypotheses in self.nbest(log_probs, lengths):
            best = hypotheses[0]
            if self.options.nbest > 1:
                best.alternatives = [{"text": h.text, "score": round(h.score, 4)} for h in hypotheses]
            results.append(best)
        return results

    def nbest(self, log_probs, lengths=None) -> list[list[Transcript]]:
        """Per input, up to `nbest` Transcripts, best first (never empty: an empty text at worst)."""
        inputs = _as_arrays(log_probs, lengths)
        for item in inputs:
            if item.ndim != 2 or (len(item) and item.shape[1] != len(self.vocab)):
                raise ValueError(f"log-probs have {item.shape[-1]} classes, the vocabulary {len(self.vocab)}")
        if self.workers > 1 and len(inputs) > 1:  # the compiled search releases the GIL: threads suffice
            size = -(-len(inputs) // self.workers)
            chunks = [inputs[i : i + size] for i in range(0, len(inputs), size)]
            with ThreadPoolExecutor(self.workers) as pool:
                return [hypotheses for chunk in pool.map(self._decode_batch, chunks) for hypotheses in chunk]
        return self._decode_batch(inputs)

    def _decode_batch(self, inputs: list[np.ndarray]) -> list[list[Transcript]]:
        """All inputs in one compiled call; Python only assembles the Transcripts."""
        if not inputs:
            return []
        vocab_size = len(self.vocab)
        if len(inputs) == 1:
            flat = inputs[0] if len(inputs[0]) else np.zeros((0, vocab_size), np.float32)
        else:
            flat = np.concatenate([item.reshape(-1, vocab_size) for item in inputs])  # (frames, vocab)
        offsets = np.zeros(len(inputs) + 1, np.int64)
        np.cumsum([len(item) for item in inputs], out=offsets[1:])
        options = self.options
        threshold = options.blank_skip_threshold
        counts, scores, lengths, n_words, tokens, _, _, _, times, confidences = beam_search(
            flat,
            offsets,
            options.beam,
            options.token_min_logp,
            options.token_max if options.token_max > 0 else vocab_size,
            math.log(threshold) if 0 < threshold < 1 else math.inf,
            options.beam_prune,
            1 if options.nbest == 1 else options.beam,  # prefixes differing in a trailing space share a text
            self._scorer,
            self.frame_seconds,
        )
        # Every object made below is kept, so garbage collections triggered by making them find nothing,
        # and a full one walks the caller's whole heap: on the speech test set they took ~20% of the time.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._transcripts(counts, scores, lengths, n_words, tokens, times, confidences)
        finally:
            if collecting:
                gc.enable()

    def _transcripts(self, counts, scores, lengths, n_words, tokens, times, confidences):
        """The kernel's flat arrays -> per input a list of Transcripts (word times and confidences come
        rounded for output: ms, 4 digits)."""
        names, nbest, space = self.vocab.tokens, self.options.nbest, self.space
        tokens, scores, lengths = tokens.tolist(), scores.tolist(), lengths.tolist()
        n_words, times, confidences = n_words.tolist(), times.tolist(), confidences.tolist()
        results, hypothesis, token_at, word_at = [], 0, 0, 0
        for count in counts.tolist():
            transcripts, seen = [], set()
            for _ in range(count):
                spelled = "".join([names[i] for i in tokens[token_at : token_at + lengths[hypothesis]]])
                # the kernel's words are the runs of tokens between spaces (all of them without a space)
                if space >= 0:
                    strings = [word for word in spelled.split(" ") if word]
                else:
                    strings = [spelled] if spelled else []
                end = word_at + n_words[hypothesis]
                hypothesis_words = [
                    Word(string, start, stop, confidence)
                    for string, (start, stop), confidence in zip(
                        strings, times[word_at:end], confidences[word_at:end], strict=True
                    )
                ]
                text = " ".join(strings) if space >= 0 else spelled
                if text not in seen:
                    seen.add(text)
                    transcripts.append(Transcript(text, scores[hypothesis], hypothesis_words))
                token_at += lengths[hypothesis]
                word_at += n_words[hypothesis]
                hypothesis += 1
            results.append(transcripts[:nbest] or [Transcript("", 0.0, [])])
        return results

    # -- tables -------------------------------------------------------------------------------
    @property
    def mode(self) -> int:
        if self.lm is None:
            return MODE_NONE
        return MODE_WORD if self.lm.unit == "word" else MODE_CHAR

    def _build_trie(self) -> dict[str, np.ndarray]:
        """The lexicon (or a word LM's vocabulary) as a prefix trie in CSR form, with per node the
        best unigram ln-prob of the words below it (the LM look-ahead inside a word)."""
        words = self.lexicon_words
        if words is None and self.mode == MODE_WORD:
            words = [unit for unit in self.lm.units if unit not in (BOS, EOS, UNK)]
        if words is None:
            empty = np.zeros(0, np.int32)
            return {"start": empty, "count": empty, "token": empty, "node": empty, "word": empty,
                    "smear": np.zeros(0)}  # fmt: skip
        unigram = self.lm.unigram_logps() if self.mode == MODE_WORD else None
        children: list[dict[int, int]] = [{}]
        word_at = [-1]
        for word in words:
            if not word or self.vocab.unknown_chars(word) or " " in word:
                continue
            node = 0
            for token in self.vocab.encode(word):
                if token not in children[node]:
                    children[node][token] = len(children)
                    children.append({}), word_at.append(-1)
                node = children[node][token]
            word_at[node] = self.lm.index.get(word, 0) if unigram is not None else 1
        smear = np.full(len(children), -np.inf)
        if unigram is not None:
            for node in range(len(children) - 1, -1, -1):  # children come after their parents
                if word_at[node] >= 0:
                    smear[node] = max(smear[node], unigram[word_at[node]])
                for child in children[node].values():
                    smear[node] = max(smear[node], smear[child])
        counts = np.array([len(c) for c in children], np.int32)
        flat = [(token, child) for c in children for token, child in sorted(c.items())]
        return {
            "start": np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32),
            "count": counts,
            "token": np.array([token for token, _ in flat], np.int32),
            "node": np.array([child for _, child in flat], np.int32),
            "word": np.array(word_at, np.int32),
            "smear": np.where(np.isfinite(smear), smear, 0.0),
        }

    def _build_scorer(self) -> Scorer:
        """The tables `kernels.beam_search` scores prefixes with."""
        lm = self.lm
        if lm is None:
            table = np.zeros(2, LM_ENTRY_DTYPE)
            table["key"] = -1  # empty
            lm_arrays = LMTables(table, 1, np.zeros(1, LM_STATE_DTYPE), 0.0)
            token_unit, root_state, eos = np.zeros(len(self.vocab), np.int32), 0, 0
        else:
            lm_arrays = lm.arrays()
            names = [SPACE if token == " " else token for token in self.vocab.tokens]
            token_unit = np.array([lm.index.get(name, 0) for name in names], np.int32)
            root_state, eos = lm.start(), lm.index[EOS]
        lex_nodes, lex_edges = _packed_trie(self._trie, len(self.vocab))
        goto, partial, output = self._automaton
        return Scorer(
            mode=self.mode,
            lm=lm_arrays,
            lm_weight=float(self.lm_weight),
            word_score=float(self.word_score),
            unk_score=float(self.unk_score),
            has_lexicon=self.lexicon_words is not None,
            token_unit=token_unit,
            lex_nodes=lex_nodes,
            lex_edges=lex_edges,
            hot_goto=goto,
            hot_partial=partial,
            hot_output=output,
            space=self.space,
            root_lm=root_state,
            eos=eos,
            margin=self._margin(lm_arrays.unk_logp),
        )

    def _margin(self, unk_logp: float) -> float:
        """The most one token can raise a prefix's bonus (bounds which extensions can make the beam)."""
        _, partial, output = self._automaton
        margin = max(0.0, self.word_score) + max(0.0, float(partial.max() + output.max()))
        smear = self._trie["smear"][1:]
        if self.mode == MODE_WORD and len(smear):  # leaving the lexicon: the <unk> look-ahead
            unknown = self.lm_weight * unk_logp + (self.unk_score if self.lexicon_words is not None else 0.0)
            margin += max(0.0, unknown - self.lm_weight * float(smear.min()))
        return margin


def _packed_trie(
    trie: dict[str, np.ndarray], vocab_size: int, dense_from: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """The trie as the kernel reads it, a record per lookup instead of one cache line per array: per node
    (first edge, edge count, word id or -1, 0); per edge (token, child node, the child's look-ahead).
    A node with `dense_from` children or more (the root, common prefixes) gets a row of vocab_size
    edges indexed by token instead (child -1 where there is none), its count set to vocab_size."""
    nodes = np.zeros((len(trie["count"]), 4), np.int32)
    nodes[:, 0], nodes[:, 1], nodes[:, 2] = trie["start"], trie["count"], trie["word"]
    edges = np.zeros(len(trie["token"]), TRIE_EDGE_DTYPE)
    edges["token"], edges["child"] = trie["token"], trie["node"]
    edges["smear"] = trie["smear"][trie["node"]] if len(trie["node"]) else 0.0
    busy = np.flatnonzero(trie["count"] >= dense_from)
    rows = np.zeros(len(busy) * vocab_size, TRIE_EDGE_DTYPE)
    rows["token"] = np.tile(np.arange(vocab_size), len(busy))
    rows["child"] = -1
    for row, node in enumerate(busy):
        first, count = trie["start"][node], trie["count"][node]
        at = row * vocab_size + edges["token"][first : first + count]
        rows["child"][at], rows["smear"][at] = (
            edges["child"][first : first + count],
            edges["smear"][first : first + count],
        )
        nodes[node, 0], nodes[node, 1] = len(edges) + row * vocab_size, vocab_size
    return nodes, np.concatenate([edges, rows])


def _read_words(lexicon: Iterable[str] | str | Path) -> list[str]:
    """Words from a list, or from a file whose lines each start with one (a lexicon or word list)."""
    if isinstance(lexicon, (str, Path)):
        path = Path(lexicon)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: lexicon not found")
        return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    return list(lexicon)


def _hotword_weights(hotwords: Hotwords, default: float) -> dict[str, float]:
    if isinstance(hotwords, Mapping):
        pairs = hotwords.items()
    else:
        pairs = [(item, default) if isinstance(item, str) else item for item in hotwords]
    return {" ".join(phrase.split()): float(weight) for phrase, weight in pairs if phrase.split()}


def _automaton(hotwords: dict[str, float], vocab: Vocab, space: int) -> tuple[np.ndarray, ...]:
    """Aho-Corasick over tokens for the hotwords, each framed by spaces so it matches whole words.

    Returns the full transition table (state, token) -> state, per state the bonus of hotwords
    completed on entering it, and the partial bonus of the longest one it is a proper prefix of
    (a look-ahead that keeps a half-heard hotword in the beam)."""
    edges: list[dict[int, int]] = [{}]
    depth, output, partial = [0], [0.0], [0.0]
    for phrase, weight in hotwords.items():
        if vocab.unknown_chars(phrase):
            raise ValueError(f"hotword {phrase!r} has characters outside the vocabulary")
        pattern = [space, *vocab.encode(phrase), space] if space >= 0 else vocab.encode(phrase)
        lead = 1 if space >= 0 else 0
        state = 0
        for position, token in enumerate(pattern, start=1):
            if token not in edges[state]:
                edges[state][token] = len(edges)
                edges.append({}), depth.append(position), output.append(0.0), partial.append(0.0)
            state = edges[state][token]
            if position < len(pattern):
                share = weight * max(position - lead, 0) / (len(pattern) - lead)
                partial[state] = max(partial[state], share)
        output[state] += weight
    goto = np.zeros((len(edges), len(vocab)), np.int32)
    fail = [0] * len(edges)
    queue = []
    for token in range(len(vocab)):
        goto[0, token] = edges[0].get(token, 0)
        if goto[0, token]:
            queue.append(goto[0, token])
    for state in queue:  # breadth first: a state's failure link is settled before its children's
        output[state] += output[fail[state]] if state else 0.0
        for token in range(len(vocab)):
            child = edges[state].get(token)
            if child is None:
                goto[state, token] = goto[fail[state], token]
            else:
                fail[child] = goto[fail[state], token]
                goto[state, token] = child
                queue.append(child)
    return goto, np.array(partial), np.array(output)


def _as_arrays(log_probs, lengths) -> list[np.ndarray]:
    """(time, vocab), (batch, time, vocab) [+ lengths] or a sequence of (time, vocab): float32 arrays."""
    if isinstance(log_probs, Sequence) and not isinstance(log_probs, np.ndarray):
        return [_as_array(item) for item in log_probs]
    array = _as_array(log_probs)
    if array.ndim == 2:
        return [array]
    if array.ndim != 3:
        raise ValueError(f"expected (time, vocab) or (batch, time, vocab) log-probs, got {array.shape}")
    lengths = [array.shape[1]] * len(array) if lengths is None else [int(n) for n in lengths]
    return [np.ascontiguousarray(array[row, :length]) for row, length in enumerate(lengths)]


def _as_array(log_probs) -> np.ndarray:
    if hasattr(log_probs, "detach"):  # a torch tensor
        log_probs = log_probs.detach().float().cpu().numpy()
    return np.ascontiguousarray(log_probs, dtype=np.float32)


def checkpoint_language_model(language_model: dict | None) -> tuple[NGramLM | None, list[str] | None]:
    """The word LM and lexicon a checkpoint carries as text ({"arpa": ..., "lexicon": ...})."""
    if not language_model:
        return None, None
    lm = NGramLM.from_arpa(io.StringIO(language_model["arpa"])) if language_model.get("arpa") else None
    lexicon = language_model.get("lexicon")
    words = [line.split()[0] for line in lexicon.splitlines() if line.strip()] if lexicon else None
    return lm, words
