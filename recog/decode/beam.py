"""Beam search with a lexicon and a word n-gram LM, through torchaudio's flashlight CTC decoder
(`decode.engine: flashlight`; recog's own is `recog.decode.ctc`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torchaudio.models.decoder import ctc_decoder

from recog.config import DecodeConfig
from recog.decode.lm import build_word_lm
from recog.decode.transcript import Transcript, words_from_emissions
from recog.vocab import Vocab

BLANK_TOKEN, WORD_TOKEN = "-", "|"


def write_lexicon(words: Iterable[str], vocab: Vocab, path: Path) -> Path:
    """One line per word: the word, then its characters, then the word boundary token."""
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


class BeamDecoder:
    """Lexicon-constrained beam search with an optional word LM; returns word times and confidences."""

    def __init__(
        self,
        vocab: Vocab,
        config: DecodeConfig,
        lexicon: str | None = None,
        lm: str | None = None,
        frame_seconds: float = 0.03,
    ):
        self.vocab, self.frame_seconds = vocab, frame_seconds
        tokens = [BLANK_TOKEN] + [WORD_TOKEN if char == " " else char for char in vocab.chars]
        self.tokens = tokens
        self.decoder = ctc_decoder(
            lexicon=lexicon if config.lexicon else None,
            tokens=tokens,
            lm=lm,
            nbest=1,
            beam_size=config.beam,
            beam_size_token=config.beam_size_token,
            beam_threshold=config.beam_threshold,
            lm_weight=config.lm_weight if lm else 0.0,
            word_score=config.word_score,
            unk_score=config.unk_score,
            sil_score=0.0,
            blank_token=BLANK_TOKEN,
            sil_token=WORD_TOKEN,
        )

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[Transcript]:
        emissions = log_probs.float().contiguous().cpu()
        hypotheses = self.decoder(emissions, lengths.to(torch.int32).cpu())
        results = []
        for row, nbest in enumerate(hypotheses):
            if not nbest:
                results.append(Transcript(""))
                continue
            best = nbest[0]
            token_ids = best.tokens.tolist()
            steps = [max(step - 1, 0) for step in best.timesteps.tolist()]  # flashlight counts from 1
            emitted = [(self.vocab.tokens[t], s) for t, s in zip(token_ids, steps, strict=False) if t != 0]
            ids = [t for t in token_ids if t != 0]
            words = words_from_emissions(emitted, log_probs[row].float().cpu(), ids, self.frame_seconds)
            text = " ".join(best.words) if best.words else " ".join(w.word for w in words)
            results.append(Transcript(" ".join(text.split()), float(best.score), words))
        return results
