"""The lexicon and word n-gram LM a trained model carries, made from its training text: a lexicon file
(a word, a tab, its spelling, per line) and an ARPA file, both stored as text in the checkpoint."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from recog.decode.lm import build_word_lm
from recog.vocab import Vocab

WORD_TOKEN = "|"  # ends each spelling in the lexicon file


def write_lexicon(words: Iterable[str], vocab: Vocab, path: Path) -> Path:
    """One line per word (sorted, once each, only words the vocabulary can spell): the word, a tab, its
    characters and the word boundary token. recog's decoder reads the first field of each line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as stream:
        for word in sorted(set(words)):
            if word and not vocab.unknown_chars(word):
                stream.write(f"{word}\t{' '.join(word)} {WORD_TOKEN}\n")
    return path


def prepare_language_model(
    sentences: list[str], vocab: Vocab, folder: Path, order: int = 3
) -> dict[str, str]:
    """Build the lexicon and ARPA LM from text; returns their paths (stored in the checkpoint's folder)."""
    words = [word for sentence in sentences for word in sentence.split()]
    lexicon = write_lexicon(words, vocab, folder / "lexicon.txt")
    arpa = build_word_lm(sentences, folder / f"words.{order}gram.arpa", order)
    return {"lexicon": str(lexicon), "lm": str(arpa)}
