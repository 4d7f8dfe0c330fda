"""The encoder and CTC head: [conv front end] -> frame stacking -> bidirectional LSTM | GRU | RNN stack ->
linear -> log-probs. The optional convolutional front end (`model.conv_channels`) is for line images.

The backward direction runs on sequences reversed within their own length, so padded batches give
exactly the outputs of packed sequences without the cost of `pack_padded_sequence` on the CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from recog.config import ModelConfig

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def reverse_within_length(sequences: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each (batch, time, ...) sequence over its first `length` steps; padding stays in place."""
    steps = torch.arange(sequences.shape[1], device=sequences.device).unsqueeze(0)  # (1, time)
    lengths = lengths.to(sequences.device).unsqueeze(1)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)  # (batch, time)
    index = index.view(*index.shape, *([1] * (sequences.dim() - 2))).expand_as(sequences)
    return sequences.gather(1, index)


def stack_frames(
    frames: torch.Tensor, lengths: torch.Tensor, stack: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate `stack` consecutive frames and keep every `stack`-th: (B, T, F) -> (B, T // stack, F * stack)."""
    if stack == 1:
        return frames, lengths
    batch, time, feat = frames.shape
    time = time // stack * stack
    stacked = frames[:, :time].reshape(batch, time // stack, feat * stack)
    return stacked, torch.div(lengths, stack, rounding_mode="floor")


class MaskedInstanceNorm(nn.Module):
    """Per line and channel: zero mean, unit variance over the rows and the line's own columns (the
    padding is left out of the statistics), then a learned scale and shift per channel."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        values, mask = image.float(), mask.float()  # (batch, chan, rows, time), (batch, 1, 1, time)
        count = (mask.sum(dim=3, keepdim=True) * image.shape[2]).clamp(min=1.0)  # (batch, 1, 1, 1)
        mean = (values * mask).sum(dim=(2, 3), keepdim=True) / count
        variance = ((values - mean).square() * mask).sum(dim=(2, 3), keepdim=True) / count
        normalised = (values - mean) * torch.rsqrt(variance + self.eps)
        return (normalised * self.weight[:, None, None] + self.bias[:, None, None]).to(image.dtype)


CONV_NORMS = ("none", "instance")


class ConvFrontEnd(nn.Module):
    """Frames read as a one-channel (feat, time) image (a line image's columns): per block a 3x3
    convolution, optional normalisation, ReLU and 2x pooling over the feature axis; the time axis
    keeps its length. Positions past each sequence's length are zeroed after every block, so a
    padded batch gives exactly the outputs of the sequences alone."""

    def __init__(self, input_dim: int, channels: tuple[int, ...], norm: str = "none"):
        super().__init__()
        if norm not in CONV_NORMS:
            raise ValueError(f"model.conv_norm: expected one of {list(CONV_NORMS)}, got {norm!r}")
        self.blocks = nn.ModuleList()
        self.norms = nn.ModuleList()  # empty without normalisation: old checkpoints keep their keys
        height, previous = input_dim, 1
        for count in channels:
            if height < 2:
                raise ValueError(
                    f"model.conv_channels: {len(channels)} blocks halve {input_dim} features to 0"
                )
            self.blocks.append(nn.Conv2d(previous, count, kernel_size=3, padding=1))
            if norm == "instance":
                self.norms.append(MaskedInstanceNorm(count))
            previous, height = count, height // 2
        self.output_dim = previous * height
        self.norm = nn.LayerNorm(self.output_dim)  # per frame: independent of the batch and its padding

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(frames.shape[1], device=frames.device)
        mask = (steps.unsqueeze(0) < lengths.to(frames.device).unsqueeze(1)).to(frames.dtype)  # (batch, time)
        mask = mask[:, None, None, :]
        image = frames.transpose(1, 2).unsqueeze(1) * mask  # (batch, 1, feat, time)
        for index, block in enumerate(self.blocks):
            image = block(image)
            if self.norms:
                image = self.norms[index](image, mask)
            image = torch.relu(image)
            rows = image.shape[2] // 2  # 2x max pooling over the features (faster than max_pool2d on CPUs)
            image = image[:, :, : 2 * rows].unflatten(2, (rows, 2)).amax(dim=3) * mask.to(image.dtype)
        batch, channels, height, time = image.shape
        frames = image.reshape(batch, channels * height, time).transpose(1, 2)  # (batch, time, chan * feat')
        return self.norm(frames)


class BidirectionalLayer(nn.Module):
    def __init__(self, cell: str, input_size: int, hidden: int):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"model.cell: expected one of {sorted(CELLS)}, got {cell!r}")
        self.forward_rnn = CELLS[cell](input_size, hidden, batch_first=True)
        self.backward_rnn = CELLS[cell](input_size, hidden, batch_first=True)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        forward_out, _ = self.forward_rnn(inputs)
        backward_out, _ = self.backward_rnn(reverse_within_length(inputs, lengths))
        return torch.cat([forward_out, reverse_within_length(backward_out, lengths)], dim=-1)


class CTCModel(nn.Module):
    """Recurrent CTC recogniser; `forward` returns (batch, time', vocab) log-probs and output lengths."""

    def __init__(self, config: ModelConfig, input_dim: int, vocab_size: int):
        super().__init__()
        self.config = config
        self.input_dim, self.vocab_size = input_dim, vocab_size
        self.front = (
            ConvFrontEnd(input_dim, tuple(config.conv_channels), config.conv_norm)
            if config.conv_channels
            else None
        )
        frame_dim = self.front.output_dim if self.front is not None else input_dim
        self.layers = nn.ModuleList(
            BidirectionalLayer(
                config.cell, frame_dim * config.stack if i == 0 else 2 * config.hidden, config.hidden
            )
            for i in range(config.layers)
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(2 * config.hidden, vocab_size)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths, self.config.stack, rounding_mode="floor")

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.front is not None:
            frames = self.front(frames, lengths)  # (batch, time, channels * feat')
        hidden, lengths = stack_frames(frames, lengths, self.config.stack)  # (batch, time', feat * stack)
        for index, layer in enumerate(self.layers):
            hidden = layer(self.dropout(hidden) if index else hidden, lengths)
        logits = self.head(self.dropout(hidden))  # (batch, time', vocab)
        return logits.float().log_softmax(dim=-1), lengths
