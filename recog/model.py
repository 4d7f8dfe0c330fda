"""The encoder and CTC head: [conv front end] -> frame stacking -> bidirectional LSTM | GRU | RNN stack ->
linear -> log-probs. The optional convolutional front end (`model.conv_channels`) is for line images.

The backward direction runs on sequences reversed within their own length, so padded batches give
exactly the outputs of packed sequences without the cost of `pack_padded_sequence` on the CPU.

On the CPU the two directions of a layer run at the same time, each on half of torch's threads (both
in the forward pass and in backpropagation): a recurrence is a chain of small matrix products that two
threads speed up by only ~1.5x, so two chains side by side on one thread each finish sooner. Dropout
masks on the CPU come from random bytes instead of `bernoulli_`, which cost ~8% of a training step.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn
from torch.nn import functional

from recog.config import ModelConfig

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def reverse_within_length(sequences: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each (batch, time, ...) sequence over its first `length` steps; padding stays in place."""
    batch, time = sequences.shape[:2]
    steps = torch.arange(time, device=sequences.device).unsqueeze(0)  # (1, time)
    lengths = lengths.to(sequences.device).unsqueeze(1)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)  # (batch, time)
    rows = (index + time * torch.arange(batch, device=sequences.device).unsqueeze(1)).reshape(-1)
    return _ReverseRows.apply(sequences, rows)


class _ReverseRows(torch.autograd.Function):
    """Rows of the (batch * time, ...) view picked by `rows`, a permutation that is its own inverse (a
    reversal within each length, padding fixed): the gradient is the same pick of the output gradient.
    Whole-row `index_select` both ways is ~4x faster than `gather` forward and ~20x faster than
    `gather`'s element-wise `scatter_add` backward."""

    @staticmethod
    def forward(ctx, sequences: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows)
        flat = sequences.reshape(rows.numel(), -1)
        return flat.index_select(0, rows).view(sequences.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (rows,) = ctx.saved_tensors
        return grad.reshape(rows.numel(), -1).index_select(0, rows).view(grad.shape), None


class Dropout(nn.Module):
    """Inverted dropout, element-wise and independent like `nn.Dropout`. On the CPU the keep mask is
    drawn as random bytes (8 per 64-bit draw), which is ~5x cheaper than `bernoulli_`; the drop
    probability is then rounded to a multiple of 1/256 (0.15 -> 38/256 = 0.148) and the kept values
    are scaled by the exact inverse of the keep probability, so expectations are unchanged."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"model.dropout: expected a probability in [0, 1), got {p}")
        self.p = p

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return inputs
        if inputs.device.type != "cpu":
            return functional.dropout(inputs, self.p, training=True)
        drop = round(self.p * 256)
        if drop == 0:
            return inputs
        count = inputs.numel()
        words = torch.empty((count + 7) // 8, dtype=torch.int64).random_(-(2**63), None)
        keep = words.view(torch.uint8)[:count].view(inputs.shape) >= drop
        # a 0/1 mask in the input's dtype: same values as multiplying by the bool mask, 1.3x faster
        return inputs * keep.to(inputs.dtype) * (256.0 / (256 - drop))

    def extra_repr(self) -> str:
        return f"p={self.p}"


# -- the two directions of a layer side by side on the CPU --------------------------------------------
CONCURRENT_DIRECTIONS = os.environ.get("RECOG_CONCURRENT_DIRECTIONS", "1") != "0"
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _direction_pool() -> ThreadPoolExecutor:
    """Two threads for the two directions; a forked child (transcription workers) makes its own."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), ThreadPoolExecutor(2, thread_name_prefix="recog-rnn"))
    return _pool[1]


def concurrent_directions(inputs: torch.Tensor) -> bool:
    """Whether a layer on `inputs` runs its directions concurrently: CPU tensors, at least 2 torch
    threads, not under DDP (whose gradient hooks expect backpropagation on the calling thread)."""
    return (
        CONCURRENT_DIRECTIONS
        and inputs.device.type == "cpu"
        and torch.get_num_threads() >= 2
        and not (torch.distributed.is_available() and torch.distributed.is_initialized())
    )


def _run_pair(first: Callable, second: Callable, grad: bool) -> tuple:
    """Run two calls on the pool, each on half of the caller's torch threads, under the caller's
    autocast state and the given grad mode (all three are per thread in torch)."""
    threads = torch.get_num_threads()
    autocast, dtype = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    inference = torch.is_inference_mode_enabled()

    def wrap(call: Callable) -> Callable:
        def run():
            torch.set_num_threads(max(1, threads // 2))
            with (
                torch.inference_mode(inference),
                torch.set_grad_enabled(grad),
                torch.autocast("cpu", dtype=dtype, enabled=autocast),
            ):
                return call()

        return run

    pool = _direction_pool()
    futures = [pool.submit(wrap(first)), pool.submit(wrap(second))]
    try:
        return tuple(future.result() for future in futures)
    finally:
        torch.set_num_threads(threads)  # the MKL setting is process-wide; the caller's count again


class _ConcurrentDirections(torch.autograd.Function):
    """Both directions of a bidirectional layer as one autograd node whose forward and backward run
    the two recurrences on two threads. The parameters' gradients are accumulated into `.grad` by the
    inner backward passes (as in reentrant checkpointing), so the node is for `loss.backward()`."""

    @staticmethod
    def forward(ctx, forward_rnn: nn.Module, backward_rnn: nn.Module, inputs, reversed_inputs, *params):
        leaves = [x.detach().requires_grad_(x.requires_grad) for x in (inputs, reversed_inputs)]
        outputs = _run_pair(lambda: forward_rnn(leaves[0])[0], lambda: backward_rnn(leaves[1])[0], grad=True)
        ctx.leaves, ctx.outputs, ctx.num_params = leaves, outputs, len(params)
        return tuple(output.detach() for output in outputs)

    @staticmethod
    def backward(ctx, *grads):
        outputs, leaves = ctx.outputs, ctx.leaves
        ctx.outputs = ctx.leaves = None
        grads = [
            torch.zeros_like(o) if g is None else g.to(o.dtype) for o, g in zip(outputs, grads, strict=True)
        ]
        _run_pair(
            lambda: torch.autograd.backward(outputs[0], grads[0]),
            lambda: torch.autograd.backward(outputs[1], grads[1]),
            grad=False,
        )
        return (None, None, leaves[0].grad, leaves[1].grad) + (None,) * ctx.num_params


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
        reversed_inputs = reverse_within_length(inputs, lengths)
        if not concurrent_directions(inputs):
            forward_out, _ = self.forward_rnn(inputs)
            backward_out, _ = self.backward_rnn(reversed_inputs)
        elif torch.is_grad_enabled() and (
            inputs.requires_grad or self.forward_rnn.weight_hh_l0.requires_grad
        ):
            params = [*self.forward_rnn.parameters(), *self.backward_rnn.parameters()]
            forward_out, backward_out = _ConcurrentDirections.apply(
                self.forward_rnn, self.backward_rnn, inputs, reversed_inputs, *params
            )
        else:
            forward_out, backward_out = _run_pair(
                lambda: self.forward_rnn(inputs)[0], lambda: self.backward_rnn(reversed_inputs)[0], grad=False
            )
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
        self.dropout = Dropout(config.dropout)
        self.head = nn.Linear(2 * config.hidden, vocab_size)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths, self.config.stack, rounding_mode="floor")

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.front is not None:
            frames = self.front(frames, lengths)  # (batch, time, channels * feat')
        hidden, lengths = stack_frames(frames, lengths, self.config.stack)  # (batch, time', feat * stack)
        if hidden.shape[1] == 0:  # every input shorter than one output frame: no steps for the RNNs
            return hidden.new_zeros(hidden.shape[0], 0, self.vocab_size).float(), lengths
        for index, layer in enumerate(self.layers):
            hidden = layer(self.dropout(hidden) if index else hidden, lengths)
        logits = self.head(self.dropout(hidden))  # (batch, time', vocab)
        return logits.float().log_softmax(dim=-1), lengths
