"""Word n-gram language models with interpolated Kneser-Ney smoothing, written as ARPA files
(which KenLM, and so the flashlight decoder, loads directly)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


def _discount(counts: Counter) -> float:
    """Absolute discount D = n1 / (n1 + 2 n2) from the counts of counts (Ney et al.)."""
    count_of_counts = Counter(counts.values())
    n1, n2 = count_of_counts.get(1, 0), count_of_counts.get(2, 0)
    return min(max(n1 / (n1 + 2 * n2), 0.1), 0.9) if n1 and n2 else 0.5


def kneser_ney(sentences: Iterable[str], order: int = 3) -> list[dict[tuple, tuple[float, float]]]:
    """Return per order {ngram: (log10 prob, log10 backoff)} for an interpolated KN model."""
    raw: list[Counter] = [Counter() for _ in range(order + 1)]
    for sentence in sentences:
        words = [BOS, *sentence.split(), EOS]
        for n in range(1, order + 1):
            for i in range(len(words) - n + 1):
                raw[n][tuple(words[i : i + n])] += 1
    # Below the highest order, counts are continuation counts (how many distinct words precede the
    # n-gram), except for n-grams pinned to the sentence start, which keep their raw counts.
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
    # Unigrams interpolate with the uniform distribution over the vocabulary.
    unigram_counts = {(w,): counts[1].get((w,), 0) for w in vocabulary}
    discount = _discount(counts[1])
    total = sum(unigram_counts.values())
    seen = sum(1 for c in unigram_counts.values() if c > 0)
    for gram, count in unigram_counts.items():
        probs[1][gram] = max(count - discount, 0) / total + discount * seen / total / len(vocabulary)
    probs[1][(BOS,)] = 0.0
    for n in range(2, order + 1):
        discount = _discount(counts[n])
        context_total: Counter = Counter()
        context_types: Counter = Counter()
        for gram, count in counts[n].items():
            context_total[gram[:-1]] += count
            context_types[gram[:-1]] += 1
        for context, total in context_total.items():
            backoffs[n - 1][context] = discount * context_types[context] / total
        for gram, count in counts[n].items():
            context = gram[:-1]
            lower = lower_prob(probs, backoffs, gram[1:])
            probs[n][gram] = (
                max(count - discount, 0) + backoffs[n - 1][context] * context_total[context] * lower
            ) / (context_total[context])
    model = []
    for n in range(1, order + 1):
        model.append(
            {
                gram: (math.log10(p) if p > 0 else -99.0, math.log10(backoffs[n].get(gram, 1.0)))
                for gram, p in probs[n].items()
            }
        )
    return model


def lower_prob(probs: list[dict], backoffs: list[dict], gram: tuple) -> float:
    """p(w | h) by backing off through shorter histories."""
    n = len(gram)
    if gram in probs[n]:
        return probs[n][gram]
    if n == 1:
        return probs[1][(UNK,)]
    return backoffs[n - 1].get(gram[:-1], 1.0) * lower_prob(probs, backoffs, gram[1:])


def write_arpa(model: list[dict[tuple, tuple[float, float]]], path: str | Path) -> None:
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


def build_word_lm(sentences: Iterable[str], path: str | Path, order: int = 3) -> Path:
    write_arpa(kneser_ney(sentences, order), path)
    return Path(path)
