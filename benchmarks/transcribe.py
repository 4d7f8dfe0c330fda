"""End-to-end speed and memory of `recog transcribe` on a folder of real TTS speech, against pocketsphinx.

The folder (cached in data/bench/transcribe/): files of 2-20 s, sentences from the Debian fortune
files (as pipelines/text.py makes them), spoken by espeak-ng accents x variants at random speed and
pitch; a mix of 16 kHz WAV, 22.05 kHz WAV and 16 kHz FLAC. Every run is a fresh process, timed from
its start to its exit (after its last line is written), with the peak memory of its whole process
tree (PSS, so pages shared by forked workers count once; RSS summed too) sampled every 0.2 s.

Runs: the headline (beam search + LM at the checkpoint's width, bf16 where the CPU has it) repeated
(median reported), variants (fp32, greedy, narrower beams), the headline on 10x the files (hard links
of the same files in ten folders) for memory, pocketsphinx (PyPI, its bundled en-us model) on a fixed
random subset, and GPU runs when there is a GPU. Writes runs/bench/transcribe.json and prints a table.

Engines: the model exported once with `recog export` (its time reported apart), then the same
transcription with `--engine onnx` (onnxruntime, fp32) beside the PyTorch engine at fp32, with the
same decoder: beam+LM always, greedy too without --quick. `engines` in the JSON compares them by wall
time and by the CPU seconds of the model stage alone (summed over the workers).

Usage: python benchmarks/transcribe.py [--files 500] [--sphinx-files 50] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CORPUS = REPO / "data" / "bench" / "transcribe"
GENERATOR = 1  # bump when the corpus recipe changes
SEED = 20261126


# ---------------------------------------------------------------- the corpus
def clip_plan(index: int, sentences: list[str], variants: list[str]) -> dict:
    """Text, voice and format of clip `index`: drawn from a generator seeded by the index alone, so
    the first N clips of any corpus size are the same files."""
    from pipelines.voices import ESPEAK_ACCENTS

    rng = random.Random(SEED * 1_000_003 + index)
    target = rng.uniform(2.5, 19.0)  # seconds; espeak-ng speaks ~2.7 words/s at the middle speed
    words, text = int(target * 2.7), []
    start = rng.randrange(len(sentences))
    while sum(len(s.split()) for s in text) < max(words, 3):
        text.append(sentences[(start + len(text)) % len(sentences)])
    kind = ("flac", "wav22", "wav16", "wav16")[index % 4]
    return {
        "index": index,
        "text": " ".join(text),
        "accent": rng.choice(ESPEAK_ACCENTS),
        "variant": rng.choice(variants),
        "kind": kind,
    }


def make_clip(plan: dict) -> dict:
    from pipelines.voices import espeak_voice, synthesize

    name = f"clip-{plan['index']:05d}." + ("flac" if plan["kind"] == "flac" else "wav")
    path = CORPUS / "audio" / name
    voice = espeak_voice(plan["accent"], plan["variant"])
    rng = np.random.default_rng(plan["index"])
    audio = synthesize(voice, plan["text"], rng)  # 16 kHz float32
    if len(audio) > 20 * 16000:  # a fast reading of a long text: keep whole words, drop the clip's end
        words = plan["text"].split()
        keep = max(3, int(len(words) * 19.5 * 16000 / len(audio)))
        plan = {**plan, "text": " ".join(words[:keep])}
        audio = synthesize(voice, plan["text"], rng)
    rate = 22050 if plan["kind"] == "wav22" else 16000
    if rate != 16000:
        import soxr

        audio = soxr.resample(audio, 16000, rate).astype(np.float32)
    partial = path.with_name(f".{name}.partial")
    soundfile.write(
        partial, audio, rate, format="FLAC" if plan["kind"] == "flac" else "WAV", subtype="PCM_16"
    )
    os.replace(partial, path)
    return {"audio": f"audio/{name}", "text": plan["text"], "duration": len(audio) / rate, "voice": voice.id}


def build_corpus(count: int, workers: int) -> Path:
    """Clips 0..count-1 (only the missing ones are made) and manifest-COUNT.jsonl; returns the manifest."""
    manifest = CORPUS / f"manifest-{count}.jsonl"
    stamp = CORPUS / "GENERATOR"
    if stamp.exists() and stamp.read_text().strip() != str(GENERATOR):
        raise SystemExit(f"{CORPUS} was made by another generator version: delete it and rerun")
    if manifest.exists():
        return manifest
    (CORPUS / "audio").mkdir(parents=True, exist_ok=True)
    stamp.write_text(f"{GENERATOR}\n")
    from pipelines.text import load_fortune_sentences
    from pipelines.voices import usable_espeak_variants

    sentences = load_fortune_sentences(min_words=3, max_words=25)
    variants = usable_espeak_variants()
    plans = [clip_plan(i, sentences, variants) for i in range(count)]
    entries: dict[int, dict] = {}
    index_file = CORPUS / "clips.jsonl"
    if index_file.exists():
        for line in index_file.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                if (CORPUS / entry["audio"]).exists():
                    entries[entry["index"]] = entry
    todo = [plan for plan in plans if plan["index"] not in entries]
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool, index_file.open("a") as index_stream:
        for plan, entry in zip(todo, pool.map(make_clip, todo, chunksize=4), strict=True):
            entry["index"] = plan["index"]
            entries[plan["index"]] = entry
            index_stream.write(json.dumps(entry) + "\n")
            index_stream.flush()
    if todo:
        print(f"made {len(todo)} clips in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    lines = [json.dumps(entries[i]) for i in range(count)]
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def folder_of(manifest: Path, copies: int = 1) -> Path:
    """A folder holding exactly the manifest's files (hard links), `copies` times in subfolders, with
    refs.jsonl (path + text of every file in it) for `--ref`."""
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    folder = CORPUS / f"{manifest.stem}-x{copies}"
    if (folder / "refs.jsonl").exists():
        return folder
    references = []
    for copy in range(copies):
        sub = folder / f"copy-{copy:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        for entry in entries:
            source, link = CORPUS / entry["audio"], sub / Path(entry["audio"]).name
            if not link.exists():
                try:
                    os.link(source, link)
                except OSError:
                    link.write_bytes(source.read_bytes())
            references.append({"audio": str(link.relative_to(folder)), "text": entry["text"]})
    (folder / ".refs.partial").write_text("".join(json.dumps(r) + "\n" for r in references))
    os.replace(folder / ".refs.partial", folder / "refs.jsonl")
    return folder


# ---------------------------------------------------------------- measuring a process
def descendants(root: int) -> list[int]:
    """`root` and every process below it (from /proc/PID/task/TID/children: no scan of all of /proc)."""
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as stream:
                    stack += [int(child) for child in stream.read().split()]
        except OSError:
            pass
    return found


def tree_memory(root: int) -> tuple[int, int]:
    """(PSS, RSS) in bytes, summed over `root` and all its descendants."""
    pss = rss = 0
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as stream:
                for line in stream:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
        except OSError:
            pass
    return pss, rss


def measure(command: list[str], env: dict | None = None) -> dict:
    """Wall time from process start to exit and the peak memory of its process tree."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_pss = peak_rss = 0
    stderr_chunks = []
    os.set_blocking(process.stderr.fileno(), False)
    while process.poll() is None:
        pss, rss = tree_memory(process.pid)
        peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
        chunk = process.stderr.read()
        if chunk:
            stderr_chunks.append(chunk)
        time.sleep(0.2)  # light polling: the measured run has the machine's cores to itself
    wall = time.perf_counter() - started
    rest = process.stderr.read()
    stderr = b"".join(stderr_chunks + ([rest] if rest else [])).decode(errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command[:8])} ... exited {process.returncode}:\n{stderr[-3000:]}")
    return {
        "wall_seconds": wall,
        "peak_pss_mb": peak_pss / 2**20,
        "peak_rss_mb": peak_rss / 2**20,
        "stderr": stderr,
    }


def run_recog(name: str, model: str, folder: Path, audio_seconds: float, extra: list[str]) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="recog-bench-"))
    output, summary_path = scratch / "out.jsonl", scratch / "summary.json"
    command = [
        sys.executable,
        "-m",
        "recog.cli",
        "transcribe",
        "--model",
        model,
        str(folder),
        "-o",
        str(output),
    ]
    command += ["--summary", str(summary_path), "--no-progress", "--ref", str(folder / "refs.jsonl"), *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = measure(command, env)
    summary = json.loads(summary_path.read_text())
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    result.update(
        name=name,
        options=" ".join(extra),
        files=len(lines),
        failed=sum(bool(line["error"]) for line in lines),
        audio_hours=audio_seconds / 3600,
        rtf=result["wall_seconds"] / audio_seconds,
        files_per_second=len(lines) / result["wall_seconds"],
        cpu_seconds=summary["seconds"],
        wer=summary["scores"]["wer"] if summary["scores"] else None,
        cer=summary["scores"]["cer"] if summary["scores"] else None,
        hypotheses={line["path"]: line["text"] for line in lines},
    )
    del result["stderr"]
    return result


# ---------------------------------------------------------------- PyTorch and onnxruntime engines
def export_onnx(model: str) -> tuple[Path, float]:
    """`recog export` of the model into a scratch folder; its wall seconds."""
    out = Path(tempfile.mkdtemp(prefix="recog-bench-onnx-")) / "model.onnx"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "recog.cli", "export", "--model", model, "--out", str(out)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
        capture_output=True,
    )
    return out, time.perf_counter() - started


def engine_runs(model: str, folder: Path, audio_seconds: float, onnx_file: Path, quick: bool) -> list[dict]:
    """Each decoder with the PyTorch engine (fp32) and the onnxruntime engine, alternated."""
    decoders = [("beam+LM", ["--beam"])] + ([] if quick else [("greedy", [])])
    runs = []
    for name, extra in decoders:
        for engine, options in (
            ("torch fp32", ["--engine", "torch", "--precision", "fp32"]),
            ("onnx", ["--engine", "onnx", "--onnx", str(onnx_file)]),
        ):
            run = run_recog(
                f"{name} {engine}", model, folder, audio_seconds, [*extra, *options, "--device", "cpu"]
            )
            runs.append({**run, "engine": engine.split()[0], "decoder": name})
    return runs


def compare_engines(runs: list[dict], export_seconds: float) -> dict:
    """Per decoder: onnx over torch fp32 in wall time and model-stage CPU seconds (below 1: onnx faster)."""
    result = {"export_seconds": export_seconds}
    for decoder in dict.fromkeys(run["decoder"] for run in runs):
        pair = {run["engine"]: run for run in runs if run["decoder"] == decoder}
        torch_run, onnx_run = pair["torch"], pair["onnx"]
        result[decoder] = {
            "wall_seconds": {"torch": torch_run["wall_seconds"], "onnx": onnx_run["wall_seconds"]},
            "model_cpu_seconds": {
                "torch": torch_run["cpu_seconds"]["model"],
                "onnx": onnx_run["cpu_seconds"]["model"],
            },
            "onnx_over_torch_wall": onnx_run["wall_seconds"] / torch_run["wall_seconds"],
            "onnx_over_torch_model_cpu": onnx_run["cpu_seconds"]["model"]
            / max(torch_run["cpu_seconds"]["model"], 1e-9),
            "same_transcripts": onnx_run["hypotheses"] == torch_run["hypotheses"],
            "peak_pss_mb": {"torch": torch_run["peak_pss_mb"], "onnx": onnx_run["peak_pss_mb"]},
        }
    return result


# ---------------------------------------------------------------- pocketsphinx
def sphinx_worker(list_file: str, output: str) -> None:
    """Transcribe the listed files with pocketsphinx's bundled en-us model (16 kHz, 16-bit mono)."""
    import soxr
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=16000, loglevel="FATAL")
    with open(output, "w") as stream:
        for path in Path(list_file).read_text().split("\n"):
            if not path:
                continue
            audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
            audio = audio.mean(axis=1)
            if rate != 16000:
                audio = soxr.resample(audio, rate, 16000)
            decoder.start_utt()
            decoder.process_raw((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes(), full_utt=True)
            decoder.end_utt()
            hypothesis = decoder.hyp()
            stream.write(json.dumps({"path": path, "text": hypothesis.hypstr if hypothesis else ""}) + "\n")


def run_sphinx(paths: list[str], durations: dict[str, float]) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="sphinx-bench-"))
    (scratch / "list.txt").write_text("\n".join(paths) + "\n")
    output = scratch / "out.jsonl"
    command = [sys.executable, __file__, "--sphinx-worker", str(scratch / "list.txt"), str(output)]
    result = measure(command)
    del result["stderr"]
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    audio = sum(durations[path] for path in paths)
    result.update(
        name="pocketsphinx",
        options="en-us (bundled), defaults",
        files=len(lines),
        failed=0,
        audio_hours=audio / 3600,
        rtf=result["wall_seconds"] / audio,
        files_per_second=len(lines) / result["wall_seconds"],
        hypotheses={line["path"]: line["text"].lower() for line in lines},
    )
    return result


def error_rates(hypotheses: dict[str, str], references: dict[str, str]) -> dict:
    from recog.metrics import ErrorRate

    rate = ErrorRate()
    for path, hypothesis in hypotheses.items():
        rate.add(references[path], hypothesis or "")
    return {"wer": rate.wer, "cer": rate.cer, "files": rate.utterances}


def model_fingerprint(path: str) -> str:
    import hashlib

    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12]


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/speech/best.pt")
    parser.add_argument("--files", type=int, default=500, help="files in the main folder")
    parser.add_argument("--scale", type=int, default=10, help="memory run on this many times the files")
    parser.add_argument("--sphinx-files", type=int, default=50, help="fixed random subset for pocketsphinx")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the headline configuration (median)")
    parser.add_argument("--quick", action="store_true", help="headline and pocketsphinx only (a smoke test)")
    parser.add_argument("--workers", type=int, default=None, help="corpus synthesis processes")
    parser.add_argument("--out", default="runs/bench/transcribe.json")
    parser.add_argument("--sphinx-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sphinx_worker:
        sphinx_worker(*args.sphinx_worker)
        return 0
    if not Path(args.model).is_file():
        raise SystemExit(f"{args.model} not found: train it first (make train-speech)")

    fingerprint = model_fingerprint(args.model)
    load_before = os.getloadavg()  # the machine is shared: a busy one slows every run alike
    manifest = build_corpus(args.files, args.workers or os.cpu_count() or 1)
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    folder = folder_of(manifest)
    durations = {str(folder / "copy-00" / Path(e["audio"]).name): e["duration"] for e in entries}
    references = {str(folder / "copy-00" / Path(e["audio"]).name): e["text"] for e in entries}
    audio_seconds = sum(durations.values())

    import torch

    from recog.precision import resolve_precision

    precision = resolve_precision("auto", "cpu")
    headline = ["--beam", "--precision", "auto", "--device", "cpu"]
    runs = [run_recog("beam+LM", args.model, folder, audio_seconds, headline) for _ in range(args.repeat)]
    onnx_file, export_seconds = export_onnx(args.model)
    engines = engine_runs(args.model, folder, audio_seconds, onnx_file, args.quick)
    variants = [] if args.quick else [
        ("beam+LM fp32", ["--beam", "--precision", "fp32", "--device", "cpu"]),
        ("beam 16 +LM", ["--beam", "16", "--precision", "auto", "--device", "cpu"]),
        ("greedy", ["--precision", "auto", "--device", "cpu"]),
    ]  # fmt: skip
    others = [run_recog(name, args.model, folder, audio_seconds, extra) for name, extra in variants]
    if torch.cuda.is_available():
        for name, extra in (("beam+LM GPU", ["--beam", "--precision", "auto", "--device", "cuda"]),
                            ("greedy GPU", ["--precision", "auto", "--device", "cuda"])):  # fmt: skip
            others.append(run_recog(name, args.model, folder, audio_seconds, extra))
    memory = None
    if not args.quick and args.scale > 1:
        big = folder_of(manifest, args.scale)
        memory = run_recog(f"beam+LM x{args.scale}", args.model, big, audio_seconds * args.scale, headline)
        memory.pop("hypotheses")

    subset = sorted(random.Random(SEED).sample(sorted(durations), min(args.sphinx_files, len(durations))))
    sphinx = run_sphinx(subset, durations)
    sphinx.update(error_rates(sphinx.pop("hypotheses"), references))
    ours_on_subset = error_rates({p: runs[0]["hypotheses"][p] for p in subset}, references)
    engine_report = compare_engines(engines, export_seconds)
    for run in runs + others + engines:
        run.pop("hypotheses")

    if model_fingerprint(args.model) != fingerprint:
        raise SystemExit(
            f"{args.model} changed during the benchmark (a training run wrote it?): run it again"
        )
    best = sorted(runs, key=lambda run: run["rtf"])[len(runs) // 2]  # the median run
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cpu_precision_auto": precision,
            "load_average_1min": {"start": load_before[0], "end": os.getloadavg()[0]},
        },
        "model": {"path": args.model, "sha1": fingerprint},
        "corpus": {
            "folder": str(folder.relative_to(REPO)),
            "files": len(entries),
            "audio_hours": audio_seconds / 3600,
            "duration_seconds": {
                "min": min(durations.values()),
                "median": statistics.median(durations.values()),
                "max": max(durations.values()),
            },
            "voices": len({e["voice"] for e in entries}),
            "formats": "1/4 FLAC 16 kHz, 1/4 WAV 22.05 kHz, 1/2 WAV 16 kHz; 16-bit",
        },
        "headline": {
            "rtf_median": statistics.median(run["rtf"] for run in runs),
            "rtf_runs": [run["rtf"] for run in runs],
            "wall_seconds_median": statistics.median(run["wall_seconds"] for run in runs),
            "files_per_second_median": statistics.median(run["files_per_second"] for run in runs),
            "peak_pss_mb_median": statistics.median(run["peak_pss_mb"] for run in runs),
        },
        "runs": runs + others + engines,
        "engines": engine_report,
        "memory": memory,
        "pocketsphinx": {**sphinx, "ours_on_same_files": ours_on_subset},
        "ratios": {
            "pocketsphinx_rtf_over_ours": sphinx["rtf"] / statistics.median(run["rtf"] for run in runs),
            "peak_pss_scale_over_base": memory["peak_pss_mb"] / best["peak_pss_mb"] if memory else None,
            "peak_rss_scale_over_base": memory["peak_rss_mb"] / best["peak_rss_mb"] if memory else None,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print_table(report)
    return 0


def print_table(report: dict) -> None:
    rows = [*report["runs"], *([report["memory"]] if report["memory"] else []), report["pocketsphinx"]]
    print(f"\n{'run':<18} {'files':>6} {'hours':>6} {'wall s':>8} {'CPU s':>7} {'RTF':>8} {'files/s':>8} "
          f"{'PSS MB':>7} {'RSS MB':>7} {'WER %':>6}")  # fmt: skip
    for run in rows:
        wer = "" if run.get("wer") is None else f"{100 * run['wer']:.1f}"
        cpu = f"{sum(run['cpu_seconds'].values()):.1f}" if run.get("cpu_seconds") else ""  # engine stages
        print(
            f"{run['name']:<18} {run['files']:>6} {run['audio_hours']:>6.2f} {run['wall_seconds']:>8.1f} {cpu:>7} "
            f"{run['rtf']:>8.4f} {run['files_per_second']:>8.1f} {run['peak_pss_mb']:>7.0f} "
            f"{run['peak_rss_mb']:>7.0f} {wer:>6}"
        )
    ratios = report["ratios"]
    print(
        f"\nheadline RTF (median of {len(report['headline']['rtf_runs'])}): "
        f"{report['headline']['rtf_median']:.4f}; pocketsphinx is "
        f"{ratios['pocketsphinx_rtf_over_ours']:.0f}x slower (on {report['pocketsphinx']['files']} files)"
    )
    ours = report["pocketsphinx"]["ours_on_same_files"]
    print(
        f"WER on those files: recog {100 * ours['wer']:.1f}%, pocketsphinx {100 * report['pocketsphinx']['wer']:.1f}%"
    )
    if ratios["peak_pss_scale_over_base"]:
        print(f"x{report['memory']['files'] // report['corpus']['files']} files / base, peak PSS: "
              f"{ratios['peak_pss_scale_over_base']:.2f}, peak RSS (summed): "
              f"{ratios['peak_rss_scale_over_base']:.2f}")  # fmt: skip
    load = report["machine"]["load_average_1min"]
    print(
        f"load average (1 min) at start {load['start']:.1f}, at end {load['end']:.1f} on {report['machine']['cpus']} CPUs"
    )
    for decoder, row in report["engines"].items():
        if decoder == "export_seconds":
            continue
        print(
            f"{decoder}: onnx / torch fp32 wall {row['onnx_over_torch_wall']:.2f}, model-stage CPU "
            f"{row['onnx_over_torch_model_cpu']:.2f} ({row['model_cpu_seconds']['onnx']:.1f} s vs "
            f"{row['model_cpu_seconds']['torch']:.1f} s), same transcripts: {row['same_transcripts']}"
        )
    split = report["runs"][0]["cpu_seconds"]
    total = sum(split.values()) or 1.0
    print("CPU time split (headline, all processes): " + ", ".join(
        f"{stage} {100 * value / total:.0f}%" for stage, value in split.items()))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
