"""Smoke test of the training-speed benchmark: every variant trains, the JSON has every ratio, and the
module-level switches it flips per variant are restored (timings are never asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import recog.model

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_speed_benchmark_runs_every_variant_and_restores_the_switches(tmp_path):
    bench = load("train_speed")
    reversal, concurrent = recog.model.reverse_within_length, recog.model.CONCURRENT_DIRECTIONS
    out = tmp_path / "train_speed.json"
    assert bench.main(["--steps", "1", "--batch-frames", "1200", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert len(report["frames_per_s"]) == 12 and all(v > 0 for v in report["frames_per_s"].values())
    for key in ("row_reversal_over_gather_bf16", "fused_over_loop_adamw_bf16", "padded_over_packed_bf16"):
        assert report["ratios"][key] > 0
    assert recog.model.reverse_within_length is reversal
    assert recog.model.CONCURRENT_DIRECTIONS == concurrent


def test_benchmark_reference_reversal_equals_recogs():
    import torch

    bench = load("train_speed")
    values = torch.randn(3, 9, 4)
    lengths = torch.tensor([9, 5, 2])
    assert torch.equal(
        bench.gather_reversal(values, lengths), recog.model.reverse_within_length(values, lengths)
    )
