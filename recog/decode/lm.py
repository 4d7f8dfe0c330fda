"""Character and word n-gram language models: modified Kneser-Ney estimation, ARPA import and export
(KenLM, and so the flashlight decoder, reads the files; KenLM's ARPA files load here), and `NGramLM`,
a compact array form that the compiled beam search scores from."""

from __future__ import annotations

import io
import math
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
SPACE = "<space>"  # a space as a unit of a character LM (ARPA units are whitespace separated)
LN10 = math.log(10.0)

Grams = list[dict[tuple, tuple[float, float]]]  # per order: {ngram: (log10 prob, log10 backoff)}


def _discounts(counts: Counter) -> tuple[float, float, float]:
    """Modified Kneser-Ney discounts D1, D2, D3+ from the counts of counts (Chen & Goodman, 1998).

    Tiny corpora lack some counts of counts; then one absolute discount n1 / (n1 + 2 n2) is used."""
    n = Counter(counts.values())
    n1, n2, n3, n4 = (n.get(k, 0) for k in (1, 2, 3, 4))
    if n1 and n2:
        y = n1 / (n1 + 2 * n2)
        if n3 and n4:
            discounts = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
            if all(0 < d < k for k, d in enumerate(discounts, start=1)):
                return discounts
        single = min(max(y, 0.1), 0.9)
        return single, single, single
    return 0.5, 0.5, 0.5


def kneser_ney(sentences: Iterable[str], order: int = 3) -> Grams:
    """A word n-gram model with interpolated modified Kneser-Ney smoothing."""
    return estimate((sentence.split() for sentence in sentences), order)


def estimate(sequences: Iterable[Sequence[str]], order: int = 3) -> Grams:
    """Interpolated modified Kneser-Ney over unit sequences (words, or characters with SPACE).

    Below the highest order, counts are continuation counts (how many distinct units precede the
    n-gram), except for n-grams pinned to the sentence start, which keep their raw counts (as KenLM)."""
    if order < 1:
        raise ValueError(f"n-gram order must be at least 1, got {order}")
    raw: list[Counter] = [Counter() for _ in range(order + 1)]
    for sequence in sequences:
        units = [BOS, *sequence, EOS]
        for n in range(1, order + 1):
            grams = raw[n]
            for i in range(len(units) - n + 1):
                grams[tuple(units[i : i + n])] += 1
    counts: list[Counter] = [Counter() for _ in range(order + 1)]
    counts[order] = raw[order]
    for n in range(order - 1, 0, -1):
        left_extensions = Counter(gram[1:] for gram in raw[n + 1])
        counts[n] = Counter(
            {gram: count if gram[0] == BOS else left_extensions[gram] for gram, count in raw[n].items()}
        )
    vocabulary = {gram[0] for gram in counts[1]} | {UNK, EOS}
    vocabulary.discard(BOS)

    probs: list[dict[tuple, float]] = [{} for _ in range(order + 1)]
    backoffs: list[dict[tuple, float]] = [{} for _ in range(order + 1)]
    for n in range(1, order + 1):
        grams = {(w,): counts[1].get((w,), 0) for w in vocabulary} if n == 1 else counts[n]
        discounts = _discounts(counts[n])
        context_total: Counter = Counter()
        context_mass: Counter = Counter()  # the discounted mass each context hands to lower orders
        for gram, count in grams.items():
            context_total[gram[:-1]] += count
            if count:
                context_mass[gram[:-1]] += discounts[min(count, 3) - 1]
        for context, total in context_total.items():
            backoffs[n - 1][context] = context_mass[context] / total
        for gram, count in grams.items():
            context = gram[:-1]
            # unigrams interpolate with the uniform distribution over the vocabulary
            lower = 1 / len(vocabulary) if n == 1 else lower_prob(probs, backoffs, gram[1:])
            discounted = max(count - discounts[min(count, 3) - 1], 0) if count else 0
            probs[n][gram] = (discounted + context_mass[context] * lower) / context_total[context]
    probs[1][(BOS,)] = 0.0
    backoffs[0] = {}
    return [
        {
            gram: (math.log10(p) if p > 0 else -99.0, math.log10(backoffs[n].get(gram, 1.0)))
            for gram, p in probs[n].items()
        }
        for n in range(1, order + 1)
    ]


def lower_prob(probs: list[dict], backoffs: list[dict], gram: tuple) -> float:
    """p(w | h) by backing off through shorter histories."""
    n = len(gram)
    if gram in probs[n]:
        return probs[n][gram]
    if n == 1:
        return probs[1][(UNK,)]
    return backoffs[n - 1].get(gram[:-1], 1.0) * lower_prob(probs, backoffs, gram[1:])


def write_arpa(model: Grams, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as stream:
        stream.write("\\data\\\n")
        for n, grams in enumerate(model, start=1):
            stream.write(f"ngram {n}={len(grams)}\n")
        for n, grams in enumerate(model, start=1):
            stream.write(f"\n\\{n}-grams:\n")
            for gram, (logprob, backoff) in sorted(grams.items()):
                if n < len(model):
                    stream.write(f"{logprob:.6f}\t{' '.join(gram)}\t{backoff:.6f}\n")
                else:
                    stream.write(f"{logprob:.6f}\t{' '.join(gram)}\n")
        stream.write("\n\\end\\\n")


def read_arpa(source: str | Path | io.TextIOBase) -> Grams:
    """Parse ARPA text (a path or an open text stream) into per-order {ngram: (log10 p, log10 bo)}."""
    stream = open(source) if isinstance(source, (str, Path)) else source  # noqa: SIM115
    try:
        model: Grams = []
        current: dict | None = None
        for number, line in enumerate(stream, start=1):
            line = line.strip()
            if not line or line.startswith("ngram ") or line == "\\data\\":
                continue
            if line == "\\end\\":
                break
            if line.startswith("\\") and line.endswith("-grams:"):
                model.append({})
                current = model[-1]
                continue
            parts = line.split()
            n = len(model)
            if current is None or len(parts) not in (n + 1, n + 2):
                raise ValueError(f"line {number}: not an ARPA {n}-gram entry: {line[:80]!r}")
            backoff = float(parts[n + 1]) if len(parts) == n + 2 else 0.0
            current[tuple(parts[1 : n + 1])] = (float(parts[0]), backoff)
    finally:
        if stream is not source:
            stream.close()
    if not model:
        raise ValueError("no n-grams found (is this an ARPA file?)")
    return model


def build_word_lm(sentences: Iterable[str], path: str | Path, order: int = 3) -> Path:
    write_arpa(kneser_ney(sentences, order), path)
    return Path(path)


def char_units(text: str) -> list[str]:
    """A sentence as character-LM units: its characters, with SPACE between words."""
    units: list[str] = []
    for number, word in enumerate(text.split()):
        if number:
            units.append(SPACE)
        units.extend(word)
    return units


class NGramLM:
    """An n-gram model in flat arrays: one entry per n-gram (context state, unit) with its log-prob
    (natural log) and the state it leads to, and per state its back-off weight and shorter history.
    State 0 is the empty history; every n-gram shorter than the order is a state."""

    def __init__(self, unit: str, order: int, units: list[str], arrays: dict[str, np.ndarray]):
        if unit not in ("word", "char"):
            raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
        self.unit, self.order, self.units = unit, order, units
        self.index = {name: i for i, name in enumerate(units)}
        self.entry_context = arrays["entry_context"].astype(np.int32)
        self.entry_unit = arrays["entry_unit"].astype(np.int32)
        self.entry_logp = arrays["entry_logp"].astype(np.float32)
        self.entry_next = arrays["entry_next"].astype(np.int32)
        self.state_backoff = arrays["state_backoff"].astype(np.float32)
        self.state_parent = arrays["state_parent"].astype(np.int32)
        self.state_entry = arrays["state_entry"].astype(np.int32)
        self._arrays: tuple | None = None

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def build(cls, texts: Iterable[str], order: int = 3, unit: str = "word") -> NGramLM:
        """Estimate from sentences (one string each) with modified Kneser-Ney."""
        split = str.split if unit == "word" else char_units
        return cls.from_grams(estimate((split(text) for text in texts), order), unit)

    @classmethod
    def from_grams(cls, model: Grams, unit: str = "word") -> NGramLM:
        order = len(model)
        units = [UNK, BOS, EOS] + sorted({g[0] for g in model[0]} - {UNK, BOS, EOS})
        index = {name: i for i, name in enumerate(units)}
        states: dict[tuple, int] = {(): 0}
        backoff, parent, state_entry = [0.0], [0], [-1]
        context, unit_ids, logp, gram_of_entry = [], [], [], []

        def longest_state(gram: tuple) -> int:
            while gram not in states:
                gram = gram[1:]
            return states[gram]

        def add_entry(gram: tuple, log10p: float) -> None:
            if gram[-1] not in index:
                raise ValueError(f"{' '.join(gram)}: unit {gram[-1]!r} has no unigram")
            context.append(states[gram[:-1]])
            unit_ids.append(index[gram[-1]])
            logp.append(log10p * LN10)
            gram_of_entry.append(gram)

        for n, grams in enumerate(model, start=1):
            for gram, (log10p, log10bo) in sorted(grams.items()):
                for cut in range(1, n):  # a context missing from the file (KenLM adds these too)
                    prefix = gram[:cut]
                    if prefix not in states:
                        add_entry(prefix, _backoff_log10(model, prefix))
                        states[prefix] = len(backoff)
                        backoff.append(0.0), parent.append(longest_state(prefix[1:]))
                        state_entry.append(len(logp) - 1)
                add_entry(gram, log10p)
                if n < order:
                    states[gram] = len(backoff)
                    backoff.append(log10bo * LN10), parent.append(longest_state(gram[1:]))
                    state_entry.append(len(logp) - 1)
        entry_next = [states[g] if g in states else longest_state(g[1:]) for g in gram_of_entry]
        arrays = {
            "entry_context": np.array(context, np.int32),
            "entry_unit": np.array(unit_ids, np.int32),
            "entry_logp": np.array(logp, np.float32),
            "entry_next": np.array(entry_next, np.int32),
            "state_backoff": np.array(backoff, np.float32),
            "state_parent": np.array(parent, np.int32),
            "state_entry": np.array(state_entry, np.int32),
        }
        return cls(unit, order, units, arrays)

    # -- files --------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, unit: str | None = None) -> NGramLM:
        """Read an ARPA file (units as written; `unit` says which kind, default word) or a saved model."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: language model not found")
        if zipfile.is_zipfile(path):
            with np.load(path, allow_pickle=False) as stored:
                header = stored["header"].tolist()
                units = str(stored["units"]).split("\n")
                return cls(header[0], int(header[1]), units, {key: stored[key] for key in stored.files})
        return cls.from_arpa(path, unit or "word")

    @classmethod
    def from_arpa(cls, source: str | Path | io.TextIOBase, unit: str = "word") -> NGramLM:
        model = read_arpa(source)
        if unit == "char":  # KenLM character models often write the word boundary as '|'
            model = [{tuple(SPACE if u == "|" else u for u in g): v for g, v in m.items()} for m in model]
        return cls.from_grams(model, unit)

    def save(self, path: str | Path) -> Path:
        """The compact form: a zip of numpy arrays (about 16 bytes per n-gram)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as stream:
            np.savez_compressed(
                stream,
                header=np.array([self.unit, str(self.order)]),
                units=np.array("\n".join(self.units)),
                entry_context=self.entry_context,
                entry_unit=self.entry_unit,
                entry_logp=self.entry_logp,
                entry_next=self.entry_next,
                state_backoff=self.state_backoff,
                state_parent=self.state_parent,
                state_entry=self.state_entry,
            )
        return path

    def grams(self) -> Grams:
        """Back to per-order {ngram: (log10 prob, log10 backoff)}, as ARPA files hold them."""
        entry_gram: list[tuple] = []
        for context, unit in zip(self.entry_context.tolist(), self.entry_unit.tolist(), strict=True):
            prefix = () if context == 0 else entry_gram[self.state_entry[context]]
            entry_gram.append((*prefix, self.units[unit]))
        backoff_of = {
            int(e): float(b) for e, b in zip(self.state_entry[1:], self.state_backoff[1:], strict=True)
        }
        model: Grams = [{} for _ in range(self.order)]
        for entry, gram in enumerate(entry_gram):
            log10bo = backoff_of.get(entry, 0.0) / LN10
            model[len(gram) - 1][gram] = (round(float(self.entry_logp[entry]) / LN10, 6), round(log10bo, 6))
        return model

    def write_arpa(self, path: str | Path) -> Path:
        write_arpa(self.grams(), path)
        return Path(path)

    # -- scoring ------------------------------------------------------------------------------
    def arrays(self):
        """Everything the compiled scorer needs (`kernels.LMTables`), built on first use: the
        open-addressing hash table (context * units + unit) -> (ln p, next state), the number of units,
        per state (backoff weight, parent state), and ln p(<unk>)."""
        if self._arrays is None:
            from recog.decode.lm_table import LM_STATE_DTYPE, LMTables, build_table

            table = build_table(
                self.entry_context, self.entry_unit, self.entry_logp, self.entry_next, len(self.units)
            )
            states = np.empty(len(self.state_backoff), LM_STATE_DTYPE)
            states["backoff"], states["parent"] = self.state_backoff, self.state_parent
            unk = self._unigram(UNK)
            unk_logp = float(self.entry_logp[unk]) if unk >= 0 else -100.0
            self._arrays = LMTables(table, len(self.units), states, unk_logp)
        return self._arrays

    def _unigram(self, unit: str) -> int:
        hits = np.flatnonzero((self.entry_context == 0) & (self.entry_unit == self.index.get(unit, -1)))
        return int(hits[0]) if len(hits) else -1

    def unigram_logps(self) -> np.ndarray:
        """ln p(unit) with the empty history, per unit id (the decoder's look-ahead inside words)."""
        logps = np.full(len(self.units), self.arrays().unk_logp, np.float64)
        unigrams = self.entry_context == 0
        logps[self.entry_unit[unigrams]] = self.entry_logp[unigrams]
        return logps

    def score(self, state: int, unit: str) -> tuple[float, int]:
        """ln p(unit | state) and the next state; unknown units score as <unk>."""
        from recog.decode.lm_table import lm_score

        return lm_score(self.arrays(), state, self.index.get(unit, 0))

    def sentence_logprob(self, units: Sequence[str], bos: bool = True, eos: bool = True) -> float:
        """ln p of a sequence of units (words, or characters with SPACE), <s> and </s> included."""
        state = self.start(bos)
        total = 0.0
        for unit in [*units, EOS] if eos else units:
            logp, state = self.score(state, unit)
            total += logp
        return total

    def start(self, bos: bool = True) -> int:
        """The state after <s> (or the empty history)."""
        if not bos:
            return 0
        entry = self._unigram(BOS)
        return int(self.entry_next[entry]) if entry >= 0 else 0

    def __len__(self) -> int:
        return len(self.entry_logp)

    def __repr__(self) -> str:
        return f"NGramLM({self.unit}, order={self.order}, units={len(self.units)}, ngrams={len(self)})"


def _backoff_log10(model: Grams, gram: tuple) -> float:
    """log10 p of an n-gram missing from an ARPA file, by backing off to shorter ones."""
    n = len(gram)
    if gram in model[n - 1]:
        return model[n - 1][gram][0]
    if n == 1:
        return model[0].get((UNK,), (-100.0, 0.0))[0]
    context = gram[:-1]
    backoff = model[n - 2].get(context, (0.0, 0.0))[1]
    return backoff + _backoff_log10(model, gram[1:])
