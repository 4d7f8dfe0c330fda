"""Training-step throughput of the encoder variants (frames of 10 ms audio per second), as JSON.

Compares, on identical variable-length batches: recog's padded BiLSTM (backward direction reversed
within each length) against torch's bidirectional LSTM over `pack_padded_sequence`; the two directions
of each layer run concurrently (recog's default on the CPU) against one after the other; recog's
byte-mask dropout against `nn.Dropout`; the reversal within each length by whole-row `index_select`
against `gather`; the fused AdamW step against the per-tensor loop; bf16 autocast against fp32 (where the CPU has bf16; elsewhere every comparison runs in fp32 and bf16
is reported as not supported); 3-frame
stacking against none and against 4; GRU cells against LSTM. Every variant trains on each batch in turn (rotating the order), so
a change in the machine's speed hits all of them alike; a ratio is the median of per-batch ratios.
Usage: python benchmarks/train_speed.py [--steps 8] [--out runs/bench/train_speed.json]
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

import recog.model
from recog.config import ModelConfig
from recog.model import CTCModel, reverse_within_length, stack_frames
from recog.precision import cpu_bf16_supported


def gather_reversal(sequences: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The reference reversal within each length: an element-wise `gather` (backward: `scatter_add`)."""
    steps = torch.arange(sequences.shape[1]).unsqueeze(0)
    lengths = lengths.unsqueeze(1)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    return sequences.gather(1, index.view(*index.shape, *([1] * (sequences.dim() - 2))).expand_as(sequences))


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


class Variant:
    def __init__(self, name: str, builder, stack: int, bf16: bool, cell: str = "lstm", **options):
        torch.manual_seed(0)
        dropout = options.get("dropout", 0.0)
        config = ModelConfig(cell=cell, hidden=256, layers=3, dropout=dropout, stack=stack)
        self.name, self.bf16 = name, bf16
        self.model = builder(config, 40, 29).train()
        if options.get("torch_dropout"):
            self.model.dropout = nn.Dropout(dropout)
        self.concurrent = options.get("concurrent", True)
        self.reversal = gather_reversal if options.get("gather_reversal") else reverse_within_length
        fused = options.get("fused_adamw", True)  # recog's trainer uses the fused step
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=fused)
        self.rates: list[float] = []

    def step(self, frames, lengths, labels, label_lengths, ctc: nn.CTCLoss) -> float:
        recog.model.CONCURRENT_DIRECTIONS = self.concurrent
        recog.model.reverse_within_length = self.reversal
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            log_probs, out_lengths = self.model(frames, lengths)
        loss = ctc(log_probs.float().transpose(0, 1), labels, out_lengths, label_lengths)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(lengths.sum()) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-frames", type=int, default=24000)
    parser.add_argument("--out", default="runs/bench/train_speed.json")
    args = parser.parse_args(argv)
    batches = make_batches(args.steps + 2, args.batch_frames)
    # The comparisons run in the precision training uses here: bf16 where the CPU has bf16 recurrent
    # kernels, else fp32 (bf16 is then reported as not supported instead of failing inside oneDNN).
    bf16 = cpu_bf16_supported()
    work = "bf16" if bf16 else "fp32"
    variants = [
        Variant(f"padded_stack3_{work}", CTCModel, 3, bf16),
        Variant(f"padded_sequential_stack3_{work}", CTCModel, 3, bf16, concurrent=False),
        Variant(f"packed_stack3_{work}", PackedModel, 3, bf16),
        Variant(f"padded_stack1_{work}", CTCModel, 1, bf16),
        Variant(f"padded_stack4_{work}", CTCModel, 4, bf16),
        Variant(f"padded_gru_stack3_{work}", CTCModel, 3, bf16, cell="gru"),
        Variant(f"padded_dropout_stack3_{work}", CTCModel, 3, bf16, dropout=0.15),
        Variant(f"padded_torch_dropout_stack3_{work}", CTCModel, 3, bf16, dropout=0.15, torch_dropout=True),
        Variant(f"padded_gather_reversal_stack3_{work}", CTCModel, 3, bf16, gather_reversal=True),
        Variant(f"padded_loop_adamw_stack3_{work}", CTCModel, 3, bf16, fused_adamw=False),
    ]
    if bf16:  # the precision pair: fp32 against the bf16 default
        variants += [
            Variant("padded_stack3_fp32", CTCModel, 3, False),
            Variant("packed_stack3_fp32", PackedModel, 3, False),
        ]
    ctc = nn.CTCLoss(zero_infinity=True)
    setting = recog.model.CONCURRENT_DIRECTIONS
    for index, batch in enumerate(batches):
        shift = index % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            rate = variant.step(*batch, ctc)
            if index >= 2:  # the first steps pay for kernel selection
                variant.rates.append(rate)
        print(f"batch {index + 1}/{len(batches)}", flush=True)
    recog.model.CONCURRENT_DIRECTIONS = setting
    recog.model.reverse_within_length = reverse_within_length
    rates = {variant.name: variant.rates for variant in variants}
    results = {name: round(statistics.median(values)) for name, values in rates.items()}
    for name, value in results.items():
        print(f"{name:34s} {value:>8d} frames/s")

    def ratio(a: str, b: str) -> float | None:
        if a not in rates or b not in rates:
            return None
        return round(statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True)), 2)

    base = f"padded_stack3_{work}"
    report = {
        "frames_per_s": results,
        "precision": work,
        "not_supported": {}
        if bf16
        else {
            "bf16": "not supported on this CPU (no oneDNN bf16 recurrent kernels: needs AVX512-BF16 or AMX)"
        },
        "ratios": {
            f"concurrent_over_sequential_directions_{work}": ratio(base, f"padded_sequential_stack3_{work}"),
            f"byte_mask_over_torch_dropout_{work}": ratio(
                f"padded_dropout_stack3_{work}", f"padded_torch_dropout_stack3_{work}"
            ),
            f"row_reversal_over_gather_{work}": ratio(base, f"padded_gather_reversal_stack3_{work}"),
            f"fused_over_loop_adamw_{work}": ratio(base, f"padded_loop_adamw_stack3_{work}"),
            f"padded_over_packed_{work}": ratio(base, f"packed_stack3_{work}"),
            "padded_over_packed_fp32": ratio("padded_stack3_fp32", "packed_stack3_fp32"),
            "bf16_over_fp32_padded": ratio("padded_stack3_bf16", "padded_stack3_fp32"),
            f"stack3_over_stack1_{work}": ratio(base, f"padded_stack1_{work}"),
            f"stack4_over_stack3_{work}": ratio(f"padded_stack4_{work}", base),
            f"gru_over_lstm_{work}": ratio(f"padded_gru_stack3_{work}", base),
        },
        "steps": args.steps,
        "batch_frames": args.batch_frames,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
