"""Greedy (best path) CTC decoding: argmax per frame, merge repeats, drop blanks."""

from __future__ import annotations

import torch

from recog.decode.transcript import Transcript, words_from_emissions
from recog.vocab import Vocab


class GreedyDecoder:
    def __init__(self, vocab: Vocab, frame_seconds: float = 0.03):
        self.vocab, self.frame_seconds = vocab, frame_seconds

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[Transcript]:
        """(batch, time, vocab) log-probs and (batch,) lengths -> one Transcript per row."""
        best = log_probs.argmax(dim=-1)  # (batch, time)
        results = []
        for row in range(best.shape[0]):
            path = best[row, : int(lengths[row])].tolist()
            emissions, token_ids, previous = [], [], 0
            for frame, token in enumerate(path):
                if token != 0 and token != previous:
                    emissions.append((self.vocab.tokens[token], frame))
                    token_ids.append(token)
                previous = token
            text = "".join(char for char, _ in emissions)
            words = words_from_emissions(emissions, log_probs[row], token_ids, self.frame_seconds)
            score = float(log_probs[row, : int(lengths[row])].max(dim=-1).values.sum())
            results.append(Transcript(" ".join(text.split()), score, words))
        return results
