"""Which arithmetic the model runs in, decided in one place for training, `transcribe`, `read` and the
benchmarks.

CPUs: bf16 autocast needs oneDNN's bf16 recurrent primitives, which exist on CPUs with AVX512-BF16 or
AMX and are missing on AVX2-only ones (there the LSTM fails with "could not create a primitive
descriptor"). The CPU flags alone are not the answer (oneDNN may be capped, e.g. by
ONEDNN_MAX_CPU_ISA), so the answer is a probe: one tiny forward and backward pass of each recurrent
cell under bf16 autocast, run once per process.
"""

from __future__ import annotations

import functools

import torch

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


class PrecisionError(ValueError):
    """A precision this device cannot run; the message says what to use instead."""


@functools.cache
def cpu_bf16_supported() -> bool:
    """True when bf16 autocast runs the LSTM, GRU and plain RNN on this CPU, forward and backward."""
    if not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    frames = torch.randn(2, 3, 4, generator=generator)  # (batch, time, feat)
    try:
        with torch.random.fork_rng(devices=[]):
            for cell in (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN):
                layer = cell(4, 8, batch_first=True, bidirectional=True)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    outputs, _ = layer(frames)
                outputs.float().sum().backward()
    except RuntimeError:
        return False
    return True


def cpu_bf16_native() -> bool:
    """bf16 in hardware (AVX512-BF16 or AMX) and usable: where `auto` picks bf16 on the CPU. Elsewhere
    oneDNN may emulate it, slower than fp32."""
    flags = (
        getattr(torch.cpu, name, lambda: False)()
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )
    return any(flags) and cpu_bf16_supported()


def resolve_precision(precision: str, device: str) -> str:
    """The precision to run: `auto` becomes bf16 where the hardware has it (CPUs with AVX512-BF16/AMX,
    GPUs with bf16), fp16 on older GPUs, else fp32. A forced precision the device cannot run raises
    PrecisionError instead of failing later inside oneDNN or CUDA."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if torch.device(device).type == "cuda":
        if precision == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise PrecisionError("--precision bf16: this GPU has no bf16; use fp16, fp32 or auto")
        return precision
    if precision == "auto":
        return "bf16" if cpu_bf16_native() else "fp32"
    if precision == "fp16":
        raise PrecisionError("--precision fp16 is for CUDA GPUs; on the CPU use bf16, fp32 or auto")
    if precision == "bf16" and not cpu_bf16_supported():
        raise PrecisionError(
            "--precision bf16: this CPU has no bf16 recurrent kernels (oneDNN needs AVX512-BF16 or AMX); "
            "use fp32 or auto"
        )
    return precision


def training_autocast_bf16(device: torch.device, wanted: bool) -> bool:
    """Whether training on `device` runs under CPU bf16 autocast: `train.bf16: true` means "where the
    CPU has it" and falls back to fp32 elsewhere (the run's log says which)."""
    return device.type == "cpu" and wanted and cpu_bf16_native()
