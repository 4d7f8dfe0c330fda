"""Sentences for the generated speech corpus: Debian fortunes, normalised to the model's alphabet.

Only real English text from the fortune files is used (no sentences written for this project, and
never the Harvard sentences, which are reserved for evaluation).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

FORTUNE_DIR = Path("/usr/share/games/fortunes")
# Not English prose: pictures made of characters, and Latin/foreign-language fortunes.
SKIPPED_FORTUNE_FILES = frozenset({"ascii-art", "translate-me"})
ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz' ")


class TextSourceError(RuntimeError):
    """The sentence source is missing or yields too little text."""


# ---------------------------------------------------------------- numbers -> words
_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((1_000_000_000, "billion"), (1_000_000, "million"), (1_000, "thousand"))
_ORDINAL_WORDS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def number_to_words(number: int) -> str:
    """Spell out a non-negative integer below one trillion: 1204 -> 'one thousand two hundred four'."""
    if number < 0 or number >= 1_000_000_000_000:
        raise ValueError(f"number_to_words: {number} is outside 0 .. 999,999,999,999")
    if number < 20:
        return _ONES[number]
    if number < 100:
        tens, ones = divmod(number, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if number < 1000:
        hundreds, rest = divmod(number, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_to_words(rest)}" if rest else "")
    for scale, name in _SCALES:
        if number >= scale:
            high, rest = divmod(number, scale)
            return f"{number_to_words(high)} {name}" + (f" {number_to_words(rest)}" if rest else "")
    raise AssertionError("unreachable")


def ordinal_to_words(number: int) -> str:
    """Spell out an ordinal: 21 -> 'twenty first', 100 -> 'one hundredth'."""
    words = number_to_words(number).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year_to_words(year: int) -> str:
    """Read a year the way people say it: 1984 -> 'nineteen eighty four', 1900 -> 'nineteen hundred'."""
    if 2000 <= year <= 2009 or year % 1000 == 0:
        return number_to_words(year)
    century, rest = divmod(year, 100)
    if rest == 0:
        return f"{number_to_words(century)} hundred"
    if rest < 10:
        return f"{number_to_words(century)} oh {number_to_words(rest)}"
    return f"{number_to_words(century)} {number_to_words(rest)}"


def _spell_integer(digits: str) -> str:
    value = int(digits)
    if len(digits) == 4 and 1100 <= value <= 2099:
        return year_to_words(value)
    return number_to_words(value)


# ---------------------------------------------------------------- normalisation
_ABBREVIATIONS = {
    "mr.": "mister",
    "mrs.": "missus",
    "dr.": "doctor",
    "st.": "saint",
    "jr.": "junior",
    "sr.": "senior",
    "prof.": "professor",
    "vs.": "versus",
    "etc.": "et cetera",
    "e.g.": "for example",
    "i.e.": "that is",
}
_ABBREVIATION_PATTERN = re.compile(
    r"(?<![\w.])(" + "|".join(re.escape(a) for a in _ABBREVIATIONS) + r")(?=\s|$|,)", re.IGNORECASE
)
_UNICODE_REPLACEMENTS = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "`": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"}
)
_CODE_LIKE = re.compile(r"://|www\.|\.com\b|\.org\b|[@#^*_=+<>{}\[\]|\\~]")
_ACRONYM = re.compile(r"\b[A-Z]{2,5}\b")
_OVERSTRIKE = re.compile(r".\x08")
_MONEY = re.compile(r"\$(\d[\d,]*)(?:\.(\d\d))?\b")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_DECIMAL = re.compile(r"\b(\d+)\.(\d+)\b")
_THOUSANDS = re.compile(r"\b(\d{1,3}(?:,\d{3})+)\b")
_INTEGER = re.compile(r"\d+")


def _money(match: re.Match[str]) -> str:
    dollars = int(match.group(1).replace(",", ""))
    text = f" {number_to_words(dollars)} dollar{'s' if dollars != 1 else ''}"
    if match.group(2) and int(match.group(2)):
        text += f" and {number_to_words(int(match.group(2)))} cents"
    return text + " "


def normalize_sentence(sentence: str) -> str | None:
    """Map a raw sentence to lowercase a-z, space and apostrophe; None if it cannot be read cleanly."""
    text = sentence.translate(_UNICODE_REPLACEMENTS)
    if _CODE_LIKE.search(text) or _ACRONYM.search(text):
        return None
    text = _ABBREVIATION_PATTERN.sub(lambda m: " " + _ABBREVIATIONS[m.group(1).lower()] + " ", text)
    text = text.replace("&", " and ").replace("%", " percent ")
    text = _MONEY.sub(_money, text)
    text = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _ORDINAL.sub(lambda m: f" {ordinal_to_words(int(m.group(1)))} ", text)
    text = _DECIMAL.sub(
        lambda m: f" {_spell_integer(m.group(1))} point {' '.join(_ONES[int(d)] for d in m.group(2))} ", text
    )
    if any(len(digits) > 12 for digits in _INTEGER.findall(text)):
        return None
    text = _INTEGER.sub(lambda m: f" {_spell_integer(m.group(0))} ", text)
    text = text.lower()
    text = re.sub(r"[-/]", " ", text)
    text = re.sub(r"[.,;:!?\"()]", " ", text)
    # Apostrophes survive only inside words (don't, o'clock); quote marks around words go.
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)
    text = " ".join(text.split())
    if not text or not set(text) <= ALPHABET:
        return None
    return text


# ---------------------------------------------------------------- fortunes -> sentences
_TRAILING_ATTRIBUTION = re.compile(r"\s-{1,2}\s*[A-Z][^.!?]*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(]?[A-Z0-9])")


def fortune_files(fortune_dir: Path = FORTUNE_DIR) -> list[Path]:
    """The plain fortune text files (no .dat/.u8 twins, no offensive `off/` folders), sorted."""
    if not fortune_dir.is_dir():
        raise TextSourceError(f"{fortune_dir} not found: apt-get install fortunes fortunes-min")
    return sorted(
        path
        for path in fortune_dir.iterdir()
        if path.is_file() and not path.suffix and path.name not in SKIPPED_FORTUNE_FILES
    )


def read_fortunes(path: Path) -> Iterator[str]:
    """Yield each fortune of one file as a single line of text, without attribution lines."""
    raw = path.read_bytes().decode("utf-8", errors="replace")
    raw = _OVERSTRIKE.sub("", raw)
    for fortune in re.split(r"^%\s*$", raw, flags=re.MULTILINE):
        lines = [line.strip() for line in fortune.splitlines()]
        lines = [line for line in lines if line and not line.startswith("-")]
        if lines:
            yield _TRAILING_ATTRIBUTION.sub("", " ".join(lines))


def split_sentences(paragraph: str) -> list[str]:
    """Split running text at sentence-final punctuation followed by a capital or digit."""
    protected = _ABBREVIATION_PATTERN.sub(lambda m: m.group(1).replace(".", "\x00"), paragraph)
    return [part.replace("\x00", ".").strip() for part in _SENTENCE_END.split(protected) if part.strip()]


def clean_sentences(raw_sentences: Iterable[str], min_words: int = 3, max_words: int = 25) -> list[str]:
    """Normalise, keep sentences of min_words..max_words words, drop duplicates (first one wins)."""
    seen: set[str] = set()
    kept = []
    for raw in raw_sentences:
        sentence = normalize_sentence(raw)
        if sentence is None or sentence in seen:
            continue
        if min_words <= len(sentence.split()) <= max_words:
            seen.add(sentence)
            kept.append(sentence)
    return kept


def load_fortune_sentences(
    min_words: int = 3, max_words: int = 25, fortune_dir: Path = FORTUNE_DIR
) -> list[str]:
    """All usable normalised sentences from the fortune files, in file order."""
    raw = (s for path in fortune_files(fortune_dir) for f in read_fortunes(path) for s in split_sentences(f))
    sentences = clean_sentences(raw, min_words, max_words)
    if not sentences:
        raise TextSourceError(f"no usable sentences in {fortune_dir}: apt-get install fortunes fortunes-min")
    return sentences


@dataclass(frozen=True)
class SentenceSplit:
    """Disjoint sentence lists for the three corpus splits."""

    train: list[str]
    dev: list[str]
    test: list[str]


def split_sentences_for_corpus(
    sentences: list[str], dev_count: int, test_count: int, seed: int
) -> SentenceSplit:
    """Shuffle with a fixed seed and cut into test, dev and train: no sentence is in two splits."""
    if dev_count + test_count >= len(sentences):
        raise TextSourceError(
            f"only {len(sentences)} sentences for {dev_count} dev + {test_count} test + some train"
        )
    shuffled = sorted(set(sentences))
    random.Random(seed).shuffle(shuffled)
    test = shuffled[:test_count]
    dev = shuffled[test_count : test_count + dev_count]
    return SentenceSplit(train=shuffled[test_count + dev_count :], dev=dev, test=test)
