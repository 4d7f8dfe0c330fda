"""Shared fixtures: real speech synthesised with espeak-ng, and the generated tiny corpus."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

# One thread per process: the tests share two cores with each other and often with a training run, and
# OpenMP threads that spin-wait for a descheduled sibling burn many times the CPU the work needs.
torch.set_num_threads(1)


def synthesize(text: str, path: Path, voice: str = "en-us", words_per_minute: int = 160) -> Path:
    """Speak `text` with espeak-ng into a 22.05 kHz WAV file (read_audio resamples it to 16 kHz)."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng); the tests need real speech")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(path), text], check=True)
    return path


@pytest.fixture
def speak(tmp_path):
    """speak(text, name=None, **options) -> 16 kHz float32 samples of espeak-ng saying `text`."""
    from recog.audio import read_audio

    counter = iter(range(1_000_000))

    def make(text: str, name: str | None = None, **options) -> np.ndarray:
        path = tmp_path / (name or f"speech-{next(counter)}.wav")
        return read_audio(synthesize(text, path, **options))

    return make


def subprocess_env() -> dict[str, str]:
    """Environment for `python -m recog.cli ...`: the repo on PYTHONPATH, few threads, no GPU."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["OMP_NUM_THREADS"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def kill_after_lines(process: subprocess.Popen, out: Path, lines: int, timeout: float = 120) -> None:
    """SIGKILL `process` (stderr piped) once `out` holds `lines` complete lines; fails if it exits first."""
    deadline = time.monotonic() + timeout
    try:
        while not (out.exists() and out.read_bytes().count(b"\n") >= lines):
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, f"not {lines} lines of output within {timeout:.0f} s"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()


def run_recog(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run the `recog` command line in a subprocess from the repo root and capture its output."""
    result = subprocess.run(
        [sys.executable, "-m", "recog.cli", *args],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"recog {' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout[-3000:]}"
            f"\n--- stderr\n{result.stderr[-5000:]}"
        )
    return result


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """The tiny generated corpus (train/dev/test manifests and shards), built once per test session."""
    root = tmp_path_factory.mktemp("corpus") / "tiny"
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.speech_corpus", "--preset", "tiny", "--out", str(root)],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0 or not (root / "DONE").exists():
        pytest.fail(f"building the tiny corpus failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return root
