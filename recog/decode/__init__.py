"""Decoders: plain callables `decode(log_probs, lengths) -> list[Transcript]`."""

from recog.decode.transcript import Transcript, Word, words_from_emissions

__all__ = ["Transcript", "Word", "words_from_emissions"]
