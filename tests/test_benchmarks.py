"""Smoke test of the training-speed benchmark: every variant trains, the JSON has every ratio, and the
module-level switches it flips per variant are restored (timings are never asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import recog.model
from recog.precision import cpu_bf16_supported

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
    bf16 = cpu_bf16_supported()
    work = report["precision"]
    assert work == ("bf16" if bf16 else "fp32")
    assert len(report["frames_per_s"]) == (12 if bf16 else 10)
    assert all(v > 0 for v in report["frames_per_s"].values())
    for key in ("row_reversal_over_gather", "fused_over_loop_adamw", "padded_over_packed"):
        assert report["ratios"][f"{key}_{work}"] > 0
    # without bf16 the precision pair is reported as not supported, not measured (nor a crash)
    assert (report["ratios"]["bf16_over_fp32_padded"] is None) == (not bf16)
    assert ("bf16" in report["not_supported"]) == (not bf16)
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
