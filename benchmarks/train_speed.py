"""Training-step throughput of the encoder variants (frames of 10 ms audio per second), as JSON.

Compares, on identical variable-length batches: recog's padded BiLSTM (backward direction reversed
within each length) against torch's bidirectional LSTM over `pack_padded_sequence`; bf16 autocast
against fp32; 3-frame stacking against none and against 4; GRU cells against LSTM. Medians over
repeated steps; the machine is noisy, so read the ratios.
Usage: python benchmarks/train_speed.py [--steps 6] [--out runs/bench/train_speed.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from recog.config import ModelConfig
from recog.model import CTCModel, stack_frames


class PackedModel(nn.Module):
    """The reference: torch's own bidirectional LSTM stack over packed sequences."""

    def __init__(self, config: ModelConfig, input_dim: int, vocab_size: int):
        super().__init__()
        self.config = config
        self.rnn = nn.LSTM(
            input_dim * config.stack, config.hidden, config.layers, batch_first=True, bidirectional=True
        )
        self.head = nn.Linear(2 * config.hidden, vocab_size)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor):
        stacked, lengths = stack_frames(frames, lengths, self.config.stack)
        packed = pack_padded_sequence(stacked, lengths, batch_first=True, enforce_sorted=False)
        hidden, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True)
        return self.head(hidden).float().log_softmax(-1), lengths


def make_batches(
    count: int, batch_frames: int, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        longest = int(torch.randint(150, 900, (1,), generator=generator))
        size = max(1, batch_frames // longest)
        lengths = torch.randint(int(longest * 0.85), longest + 1, (size,), generator=generator)
        lengths[0] = longest
        frames = torch.randn(size, longest, 40, generator=generator)  # (batch, time, feat)
        label_lengths = (lengths // 12).clamp(min=1)
        labels = torch.randint(1, 29, (int(label_lengths.sum()),), generator=generator)
        batches.append((frames, lengths, labels, label_lengths))
    return batches


def measure(model: nn.Module, batches, bf16: bool) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ctc = nn.CTCLoss(zero_infinity=True)
    rates = []
    for index, (frames, lengths, labels, label_lengths) in enumerate(batches):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            log_probs, out_lengths = model(frames, lengths)
        loss = ctc(log_probs.float().transpose(0, 1), labels, out_lengths, label_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if index >= 2:  # the first steps pay for kernel selection
            rates.append(float(lengths.sum()) / (time.perf_counter() - started))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-frames", type=int, default=24000)
    parser.add_argument("--out", default="runs/bench/train_speed.json")
    args = parser.parse_args(argv)
    batches = make_batches(args.steps + 2, args.batch_frames)
    results = {}
    for name, builder, stack, bf16, cell in [
        ("padded_stack3_bf16", CTCModel, 3, True, "lstm"),
        ("packed_stack3_bf16", PackedModel, 3, True, "lstm"),
        ("padded_stack3_fp32", CTCModel, 3, False, "lstm"),
        ("packed_stack3_fp32", PackedModel, 3, False, "lstm"),
        ("padded_stack1_bf16", CTCModel, 1, True, "lstm"),
        ("padded_stack4_bf16", CTCModel, 4, True, "lstm"),
        ("padded_gru_stack3_bf16", CTCModel, 3, True, "gru"),
    ]:
        torch.manual_seed(0)
        model = builder(ModelConfig(cell=cell, hidden=256, layers=3, dropout=0.0, stack=stack), 40, 29)
        results[name] = round(measure(model, batches, bf16))
        print(f"{name:22s} {results[name]:>8d} frames/s", flush=True)
    ratios = {
        "padded_over_packed_bf16": results["padded_stack3_bf16"] / results["packed_stack3_bf16"],
        "padded_over_packed_fp32": results["padded_stack3_fp32"] / results["packed_stack3_fp32"],
        "bf16_over_fp32_padded": results["padded_stack3_bf16"] / results["padded_stack3_fp32"],
        "stack3_over_stack1_bf16": results["padded_stack3_bf16"] / results["padded_stack1_bf16"],
        "stack4_over_stack3_bf16": results["padded_stack4_bf16"] / results["padded_stack3_bf16"],
        "gru_over_lstm_bf16": results["padded_gru_stack3_bf16"] / results["padded_stack3_bf16"],
    }
    report = {
        "frames_per_s": results,
        "ratios": {k: round(v, 2) for k, v in ratios.items()},
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
