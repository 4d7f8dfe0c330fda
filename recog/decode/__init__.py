"""Decoders: plain callables `decode(log_probs, lengths) -> list[Transcript]` (the `Decoder` protocol)."""

from recog.decode.base import Decoder
from recog.decode.transcript import Transcript, Word, words_from_emissions

__all__ = ["CTCBeamDecoder", "Decoder", "NGramLM", "Transcript", "Word", "words_from_emissions"]


def __getattr__(name: str):
    """The beam search and n-gram LMs load on first use (they bring numba)."""
    if name == "CTCBeamDecoder":
        from recog.decode.ctc import CTCBeamDecoder

        return CTCBeamDecoder
    if name == "NGramLM":
        from recog.decode.lm import NGramLM

        return NGramLM
    raise AttributeError(f"module 'recog.decode' has no attribute {name!r}")
