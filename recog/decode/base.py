"""The one interface every decoder has: a plain callable from CTC log-probs to Transcripts."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from recog.decode.transcript import Transcript


@runtime_checkable
class Decoder(Protocol):
    """`decoder(log_probs, lengths)`: (batch, time, vocab) log-probs (blank = 0) and (batch,) valid
    frame counts -> one Transcript per row, in order. `GreedyDecoder` and `CTCBeamDecoder` are two."""

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[Transcript]: ...
