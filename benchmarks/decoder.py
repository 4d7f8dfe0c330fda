"""CTC beam search speed and accuracy: recog's CTCBeamDecoder against pyctcdecode 0.5.0, torchaudio's
flashlight ctc_decoder and fast-ctc-decode, on identical log-probs, in one process, one thread each.
The peers are benchmark-only (recog itself needs none of them): `make bench-decoder` installs them when
missing, and a peer that is not installed is left out of the table.

Inputs: (a) synthetic peaked log-probs (fixed seed) spelling sentences of a made-up language whose word
trigram LM is built from other sentences of it; (b) log-probs of the trained speech model on its test
set (dumped to runs/bench/ once per checkpoint, by its sha1), with the checkpoint's word trigram and
lexicon. Pruning and LM weights were chosen on the dev set (see OURS, FLASHLIGHT, SPEECH_WEIGHTS). Speed is frames per
CPU second of this process (robust to other load on the machine; every decoder here is single
threaded); WER is against the reference texts. Results: runs/bench/decoder.json and a table.

    python benchmarks/decoder.py [--beams 10,25,100] [--quick] [--model runs/speech/best.pt]
                                 [--tune [recog|flashlight]] [--tune-lm both|lm|none]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from recog.config import DecodeConfig  # noqa: E402
from recog.decode.ctc import CTCBeamDecoder  # noqa: E402
from recog.decode.lm import NGramLM  # noqa: E402
from recog.decode.tuning import grid_search  # noqa: E402
from recog.metrics import ErrorRate  # noqa: E402
from recog.vocab import Vocab  # noqa: E402

VOCAB = Vocab.speech()
# Pruning per decoder, chosen as fast as each goes without losing accuracy on these inputs (see README).
# flashlight: per (beam, LM), the fastest of beam_size_token 1/2/3/5/8/29 x beam_threshold 6/10/15/20/30
# whose WER on the speech dev set is within 0.002 of the best of them (without an LM every setting
# gives the greedy WER, so the fastest is beam_size_token 1). pyctcdecode: not re-tuned this round.
# recog: the same rule, per (beam, LM) as flashlight, over beam_prune 20/10/7/5, token_min_logp -8/-6/-5/-4,
# blank_skip 0.999/0.99/0.95/0.9 (`--tune` reruns both grids on the dev dump and prints the picks below;
# the no-LM picks come from the earlier, smaller grid without the last step of each knob).
OURS = {  # per (beam, LM): `--tune` on speech run 8's dev set (no LM, 2026-11-27 09:10 UTC) and run 17's (LM,
    # 2026-11-27 16:10 UTC, `--tune --tune-lm lm`, runs/decoder-tune-s12.log)
    (10, False): {"token_min_logp": -5.0, "blank_skip_threshold": 0.95, "beam_prune": 7.0},
    (25, False): {"token_min_logp": -5.0, "blank_skip_threshold": 0.99, "beam_prune": 7.0},
    (100, False): {"token_min_logp": -5.0, "blank_skip_threshold": 0.999, "beam_prune": 7.0},
    (10, True): {"token_min_logp": -4.0, "blank_skip_threshold": 0.95, "beam_prune": 20.0},
    (25, True): {"token_min_logp": -6.0, "blank_skip_threshold": 0.99, "beam_prune": 20.0},
    (100, True): {"token_min_logp": -8.0, "blank_skip_threshold": 0.9, "beam_prune": 10.0},
    # other beam widths: the settings chosen before per-beam tuning (one per LM setting); with an LM
    # (what a trained model decodes with) they are DecodeConfig's defaults, so recog's beam search
    # gets them without this file
    False: {"token_min_logp": -6.0, "blank_skip_threshold": 0.999, "beam_prune": 10.0},
    True: {
        name: getattr(DecodeConfig, name) for name in ("token_min_logp", "blank_skip_threshold", "beam_prune")
    },
}


def ours_pruning(beam: int, with_lm: bool) -> dict:
    return OURS.get((beam, with_lm), OURS[with_lm])


PYCTC = {"token_min_logp": -8.0, "beam_prune_logp": -10.0}
FLASHLIGHT = {  # no LM: every setting gives the greedy WER; with the LM: `--tune` as OURS (run 17's dev set)
    (10, False): {"beam_size_token": 1, "beam_threshold": 20.0},
    (25, False): {"beam_size_token": 1, "beam_threshold": 20.0},
    (100, False): {"beam_size_token": 1, "beam_threshold": 10.0},
    (10, True): {"beam_size_token": 8, "beam_threshold": 15.0},
    (25, True): {"beam_size_token": 5, "beam_threshold": 30.0},
    (100, True): {"beam_size_token": 5, "beam_threshold": 15.0},
}
FLASHLIGHT_OTHER = {"beam_size_token": 8, "beam_threshold": 20.0}  # beams not tuned above
FAST_CTC = {"beam_cut_threshold": 1e-4}
# speech, for checkpoints tuned for flashlight (newer ones carry recog's own dev-tuned weights; recog
# converts the old ones' LM weight when it loads them, but a weight tuned for the other decoder is not one
# tuned for this one):
# LM weight, word score, unknown-word score, from a grid on the dev set (beams 25 and 100)
SPEECH_WEIGHTS = (0.6, 0.0, -14.0)


# -- inputs ----------------------------------------------------------------------------------------
def synthetic(utterances: int, frames: int, seed: int = 0) -> dict:
    """Peaked (time, 29) log-probs spelling random sentences, with confusions an LM can repair."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz"))
    weights = np.linspace(2.0, 0.2, len(letters))
    words = sorted(
        {"".join(rng.choice(letters, rng.integers(2, 8), p=weights / weights.sum())) for _ in range(600)}
    )
    popularity = 1.0 / np.arange(1, len(words) + 1)  # Zipf

    def sentence() -> str:
        length = rng.integers(4, 12)
        chosen, previous = [], rng.integers(len(words))
        for _ in range(length):  # a little structure for the trigram to learn: words follow neighbours
            index = (previous + rng.integers(1, 4)) % len(words) if rng.random() < 0.5 else None
            if index is None:
                index = rng.choice(len(words), p=popularity / popularity.sum())
            chosen.append(words[index])
            previous = index
        return " ".join(chosen)

    lm_text = [sentence() for _ in range(4000)]
    texts, log_probs = [], []
    while len(texts) < utterances:
        text = sentence()
        ids = VOCAB.encode(text)
        if 2 * len(ids) + 1 > frames:
            continue
        # each token sits on 1-3 frames, blanks fill the rest; the true class gets most of the mass,
        # sometimes a confusable letter gets nearly as much
        path = np.zeros(frames, np.int64)
        starts = np.sort(rng.choice(np.arange(1, frames - 3), len(ids), replace=False))
        for start, token in zip(starts, ids, strict=True):
            path[start : start + rng.integers(1, 3)] = token
        logits = rng.normal(0.0, 1.0, (frames, len(VOCAB))).astype(np.float32)
        logits[np.arange(frames), path] += np.where(path == 0, 12.0, 7.0)
        confused = (path > 0) & (rng.random(frames) < 0.15)
        logits[confused, rng.integers(3, len(VOCAB), confused.sum())] += 6.5
        logits -= np.log(np.exp(logits).sum(axis=1, keepdims=True))
        texts.append(text)
        log_probs.append(np.ascontiguousarray(logits, dtype=np.float32))
    lm = NGramLM.build(lm_text, order=3)
    lexicon = sorted({word for line in lm_text for word in line.split()})
    return {
        "log_probs": log_probs,
        "texts": texts,
        "lm": lm,
        "lexicon": lexicon,
        "weights": (0.8, 1.0, -10.0),
    }


def speech(model: Path, manifest: Path, cache: Path, limit: int | None) -> dict | None:
    """The speech model's log-probs on a manifest (dumped once per checkpoint to `cache`: a cache made
    by another checkpoint, told by its sha1, is dumped again) and the model's word LM and lexicon."""
    if not model.is_file() or not manifest.is_file():
        print(f"input (b) skipped: {model} or {manifest} is missing (make train-speech makes both)")
        return None
    from recog.checkpoint import load_checkpoint

    payload = load_checkpoint(model)
    log_probs, texts = dump_log_probs(model, manifest, cache)
    if limit:
        log_probs, texts = log_probs[:limit], texts[:limit]
    language_model = payload.get("language_model") or {}
    lm = NGramLM.from_arpa(_text_stream(language_model["arpa"])) if language_model else None
    lexicon = [line.split("\t")[0] for line in language_model.get("lexicon", "").splitlines() if line]
    decode = payload.get("decode", {})
    # as recog.recognizer reads it: no engine and no flashlight pruning (beam_size_token) is a checkpoint
    # from after flashlight was removed from recog
    engine = decode.get("engine", "flashlight" if "beam_size_token" in decode else "recog")
    if engine == "recog":  # weights tuned on dev for recog's decoder by `recog train`
        weights = (decode["lm_weight"], decode["word_score"], decode["unk_score"])
        # flashlight scores the LM in log10 units: the same fusion needs ln(10) times the weight
        flashlight_weights = (weights[0] * math.log(10), weights[1])
    else:  # an older checkpoint, tuned for flashlight
        weights = SPEECH_WEIGHTS
        flashlight_weights = (decode.get("lm_weight", 1.0), decode.get("word_score", 0.0))
    return {
        "log_probs": log_probs,
        "texts": texts,
        "lm": lm,
        "lexicon": lexicon,
        "model_sha1": _sha1(model),
        "weights": weights,
        "flashlight_weights": flashlight_weights,
    }


def dump_log_probs(model: Path, manifest: Path, cache: Path) -> tuple[list[np.ndarray], list[str]]:
    """(time, vocab) log-probs of every utterance of `manifest` and its reference texts, cached."""
    sha1 = _sha1(model)
    if cache.is_file():
        with np.load(cache) as stored:
            fresh = "model_sha1" in stored.files and str(stored["model_sha1"]) == sha1
    if not cache.is_file() or not fresh:
        import torch

        from recog.datasets.manifest import read_manifest
        from recog.datasets.shards import from_int16, load_audio
        from recog.recognizer import Recognizer

        torch.set_num_threads(1)
        print(f"dumping log-probs of {manifest} by {model} to {cache}", flush=True)
        recognizer = Recognizer.load(model)
        utterances = read_manifest(manifest)
        audio, _ = load_audio(utterances, recognizer.features.config.sample_rate, workers=1)
        kept = [u for u in utterances if u.key in audio]
        outputs = recognizer.log_probs([from_int16(audio[u.key]) for u in kept])
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            cache,
            log_probs=np.concatenate([o.numpy() for o in outputs]),
            lengths=np.array([len(o) for o in outputs]),
            texts=np.array([u.text for u in kept]),
            model_sha1=np.array(sha1),
        )
    with np.load(cache) as stored:
        offsets = np.concatenate([[0], np.cumsum(stored["lengths"])])
        flat = stored["log_probs"].astype(np.float32)
        log_probs = [np.ascontiguousarray(flat[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        return log_probs, stored["texts"].tolist()


def _sha1(path: Path) -> str:
    import hashlib

    return hashlib.sha1(path.read_bytes()).hexdigest()


def _text_stream(text: str):
    import io

    return io.StringIO(text)


# -- decoders: each a function log_probs -> text ----------------------------------------------------
def ours(beam: int, data: dict, with_lm: bool, options: dict | None = None, batch: bool = False):
    """recog, one utterance per call or (batch) the whole list in one call."""
    lm_weight, word_score, unk_score = data["weights"]
    decoder = CTCBeamDecoder(
        VOCAB,
        lm=data["lm"] if with_lm else None,
        lexicon=data["lexicon"] if with_lm else None,
        beam=beam,
        lm_weight=lm_weight,
        word_score=word_score if with_lm else 0.0,
        unk_score=unk_score,
        **(options or ours_pruning(beam, with_lm)),
    )
    if batch:
        return lambda batch_log_probs: [transcript.text for transcript in decoder(batch_log_probs)]
    return lambda log_probs: decoder(log_probs)[0].text


def flashlight(
    beam: int, data: dict, with_lm: bool, folder: Path, batch: bool = False, options: dict | None = None
):
    import torch
    from torchaudio.models.decoder import ctc_decoder

    tokens = ["-"] + ["|" if char == " " else char for char in VOCAB.chars]
    lexicon = arpa = None
    lm_weight, word_score = data.get("flashlight_weights", data["weights"][:2])
    if with_lm:
        arpa, lexicon = _lm_files(data, folder)
        lm_weight = lm_weight if "flashlight_weights" in data else lm_weight * math.log(10)
    decoder = ctc_decoder(
        lexicon=lexicon,
        tokens=tokens,
        lm=arpa,
        beam_size=beam,
        lm_weight=lm_weight if with_lm else 0.0,
        word_score=word_score if with_lm else 0.0,
        sil_score=0.0,
        blank_token="-",
        sil_token="|",
        **(options or FLASHLIGHT.get((beam, with_lm), FLASHLIGHT_OTHER)),
    )

    def text(best) -> str:
        if not best:
            return ""
        if with_lm:
            return " ".join(best[0].words)
        return "".join(VOCAB.tokens[t] for t in best[0].tokens.tolist() if t != 0).strip()

    def decode(log_probs: np.ndarray) -> str:
        return text(decoder(torch.from_numpy(log_probs).unsqueeze(0))[0])

    def decode_batch(batch_log_probs: list[np.ndarray]) -> list[str]:
        lengths = torch.tensor([len(item) for item in batch_log_probs], dtype=torch.int32)
        padded = torch.zeros(len(batch_log_probs), int(lengths.max()), len(VOCAB))  # (batch, time, vocab)
        for row, item in enumerate(batch_log_probs):
            padded[row, : len(item)] = torch.from_numpy(item)
        return [text(best) for best in decoder(padded, lengths)]

    return decode_batch if batch else decode


def pyctcdecode(beam: int, data: dict, with_lm: bool, folder: Path):
    from pyctcdecode import build_ctcdecoder

    labels = ["", *VOCAB.chars]
    lm_weight, word_score = data["weights"][:2]
    if with_lm:
        arpa, _ = _lm_files(data, folder)
        decoder = build_ctcdecoder(
            labels, kenlm_model_path=str(arpa), unigrams=data["lexicon"], alpha=lm_weight, beta=word_score
        )
    else:
        decoder = build_ctcdecoder(labels)
    return lambda log_probs: decoder.decode(log_probs, beam_width=beam, **PYCTC)


def fast_ctc_decode(beam: int, data: dict):
    from fast_ctc_decode import beam_search

    alphabet = ["_", *VOCAB.chars]
    return lambda log_probs: beam_search(np.exp(log_probs), alphabet, beam_size=beam, **FAST_CTC)[0]


def _lm_files(data: dict, folder: Path) -> tuple[str, str]:
    arpa, lexicon = folder / "lm.arpa", folder / "lexicon.txt"
    if not arpa.exists():
        data["lm"].write_arpa(arpa)
        lexicon.write_text("".join(f"{w}\t{' '.join(w)} |\n" for w in data["lexicon"]))
    return str(arpa), str(lexicon)


# -- measuring -------------------------------------------------------------------------------------
# This machine is a shared VM whose speed swings between runs: every decoder is timed over up to
# PASSES passes (fewer when one pass takes long: a pass of a slow peer is already long enough to
# average the noise) and its median pass is what the JSON and the table report.
PASSES = 3
PASS_BUDGET_S = 20.0
TUNE_BUDGET_S = 6.0  # per grid point of `--tune`


def _passes(one_pass, budget: float = PASS_BUDGET_S) -> tuple[list, list[float], list[float]]:
    """Run one_pass() until PASSES passes or `budget` CPU seconds: (last hypotheses, cpu, wall)."""
    cpus, walls = [], []
    while len(cpus) < PASSES and sum(cpus) < budget:
        cpu, wall = time.process_time(), time.perf_counter()
        hypotheses = one_pass()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return hypotheses, cpus, walls


def measure(decode, log_probs: list[np.ndarray], texts: list[str]) -> dict:
    """One call per utterance: frames/s of the median pass, WER/CER."""
    decode(log_probs[0])  # warm-up: compilation, lazy tables
    hypotheses, cpus, walls = _passes(lambda: [decode(item) for item in log_probs])
    return summary(hypotheses, log_probs, texts, cpus, walls)


def summary(
    hypotheses: list[str],
    log_probs: list[np.ndarray],
    texts: list[str],
    cpus: list[float],
    walls: list[float],
) -> dict:
    """Frames per CPU and wall second (median pass; every pass's CPU frames/s listed too), WER and CER."""
    rate = ErrorRate()
    for reference, hypothesis in zip(texts, hypotheses, strict=True):
        rate.add(reference, " ".join(hypothesis.split()))
    frames = sum(len(item) for item in log_probs)
    return {
        "frames_per_s": round(frames / max(statistics.median(cpus), 1e-9)),
        "wall_frames_per_s": round(frames / max(statistics.median(walls), 1e-9)),
        "passes_frames_per_s": [round(frames / max(cpu, 1e-9)) for cpu in cpus],
        "wer": round(rate.wer, 4),
        "cer": round(rate.cer, 4),
    }


# the grids `--tune` searches (recog's: each knob one step tighter than the picks of run 8's tuning too)
OURS_GRID = {
    "token_min_logp": (-8.0, -6.0, -5.0, -4.0),
    "blank_skip_threshold": (0.999, 0.99, 0.95, 0.9),
    "beam_prune": (20.0, 10.0, 7.0, 5.0),
}
FLASHLIGHT_GRID = {"beam_size_token": (1, 2, 3, 5, 8, 29), "beam_threshold": (6.0, 10.0, 15.0, 20.0, 30.0)}


def tune(data: dict, beams: list[int], which: str, lm_settings: tuple[bool, ...]) -> dict:
    """A decoder's pruning (`which`: recog or flashlight) by the rule in OURS' comment, on the dev set:
    per beam width and LM setting, the fastest grid point whose WER is within 0.002 of the best there."""
    axes = OURS_GRID if which == "recog" else FLASHLIGHT_GRID
    chosen = {}
    with tempfile.TemporaryDirectory() as folder:
        for with_lm in lm_settings:
            for beam in beams:
                rows = grid_search(
                    functools.partial(_tuning_point, which, beam, data, with_lm, Path(folder)), axes
                )
                best = min(row["wer"] for row in rows)
                pick = min((r for r in rows if r["wer"] <= best + 0.002), key=lambda r: r["seconds"])
                chosen[(beam, with_lm)] = {key: pick[key] for key in axes}
                print(f"chosen for {which} beam {beam} LM={with_lm}: {chosen[(beam, with_lm)]} "
                      f"(dev WER {pick['wer']:.4f}, best {best:.4f}, {pick['seconds']:.3f} s)", flush=True)  # fmt: skip
    return chosen


def _tuning_point(which: str, beam: int, data: dict, with_lm: bool, folder: Path, options: dict) -> dict:
    """One point of `tune`'s grid: dev WER and CPU seconds of one batch pass with these pruning options."""
    if which == "recog":
        decode = ours(beam, data, with_lm, options, batch=True)
    else:
        decode = flashlight(beam, data, with_lm, folder, batch=True, options=options)
    result = measure_batch(decode, data["log_probs"], data["texts"], budget=TUNE_BUDGET_S)
    print(f"tune {which} beam {beam} LM={with_lm} {options} WER {result['wer']:.4f} "
          f"{result['cpu_seconds']:.3f} s", flush=True)  # fmt: skip
    return {"wer": result["wer"], "seconds": result["cpu_seconds"]}


def measure_batch(
    decode_batch, log_probs: list[np.ndarray], texts: list[str], budget: float = PASS_BUDGET_S
) -> dict:
    """As `measure`, with all utterances handed over in one call."""
    decode_batch(log_probs[:2])  # warm-up
    hypotheses, cpus, walls = _passes(lambda: decode_batch(log_probs), budget)
    return {**summary(hypotheses, log_probs, texts, cpus, walls), "cpu_seconds": statistics.median(cpus)}


FLASHLIGHT_MODULE = "flashlight.lib.text"  # flashlight-text: torchaudio's ctc_decoder needs it


def available(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beams", default="10,25,100")
    parser.add_argument("--utterances", type=int, default=50)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--speech-limit", type=int, default=0, help="first N test utterances (0: all)")
    parser.add_argument("--quick", action="store_true", help="5 utterances per input, beam 10 and 25")
    parser.add_argument("--model", type=Path, default=REPO / "runs/speech/best.pt")
    parser.add_argument("--test", type=Path, default=REPO / "data/speech/default/test.jsonl")
    parser.add_argument("--out", type=Path, default=REPO / "runs/bench/decoder.json")
    parser.add_argument(
        "--tune",
        nargs="?",
        const="both",
        choices=("both", "recog", "flashlight"),
        help="choose the pruning of recog (OURS) and/or flashlight (FLASHLIGHT) on the dev set",
    )
    parser.add_argument(
        "--tune-lm", default="both", choices=("both", "lm", "none"), help="LM settings to tune"
    )
    parser.add_argument("--dev", type=Path, default=REPO / "data/speech/default/dev.jsonl")
    args = parser.parse_args()
    beams = [int(b) for b in args.beams.split(",")]
    if args.tune:
        dev = speech(args.model, args.dev, REPO / "runs/bench/speech-dev-logprobs.npz", args.speech_limit)
        if dev is None:
            return 1
        lm_settings = {"both": (False, True), "lm": (True,), "none": (False,)}[args.tune_lm]
        picks = {}
        which_decoders = ("recog", "flashlight") if args.tune == "both" else (args.tune,)
        if "flashlight" in which_decoders and not available(FLASHLIGHT_MODULE):
            print("--tune flashlight: flashlight-text is not installed (make bench-decoder installs it)")
            return 1
        for which in which_decoders:
            chosen = tune(dev, beams, which, lm_settings)
            picks[which] = {f"beam {b}, {'LM' if lm else 'no LM'}": v for (b, lm), v in chosen.items()}
        print(json.dumps(picks))
        return 0
    if args.quick:
        args.utterances, args.speech_limit, beams = 5, 5, [b for b in beams if b <= 25]
    inputs = {"synthetic": synthetic(args.utterances, args.frames)}
    real = speech(args.model, args.test, REPO / "runs/bench/speech-test-logprobs.npz", args.speech_limit)
    if real is not None:
        inputs["speech"] = real
    peers = {name: available(module) for name, module in
             [("pyctcdecode", "pyctcdecode"), ("fast-ctc-decode", "fast_ctc_decode"), ("kenlm", "kenlm"),
              ("flashlight", FLASHLIGHT_MODULE)]}  # fmt: skip
    missing = [name for name, found in peers.items() if not found and name != "kenlm"]
    if missing:
        print(f"not installed, left out: {', '.join(missing)} (make bench-decoder installs them)")
    results: dict = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
        "pruning": {
            "recog": {
                f"beam {b}, {'LM' if lm else 'no LM'}": ours_pruning(b, lm)
                for b in beams
                for lm in (False, True)
            },
            "pyctcdecode": PYCTC,
            "flashlight": {f"beam {b}, {'LM' if lm else 'no LM'}": v for (b, lm), v in FLASHLIGHT.items()}
            if peers["flashlight"]
            else None,
            "fast-ctc-decode": FAST_CTC,
        },
        "inputs": {},
    }
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for kind, data in inputs.items():
            folder = Path(scratch) / kind
            folder.mkdir()
            frames = sum(len(x) for x in data["log_probs"])
            entry = results["inputs"][kind] = {
                "utterances": len(data["log_probs"]),
                "frames": frames,
                "weights (lm_weight, word_score, unk_score)": data["weights"],
                "model_sha1": data.get("model_sha1"),
                "runs": [],
            }
            greedy = measure(_greedy, data["log_probs"], data["texts"])
            entry["greedy"] = greedy
            rows.append((kind, "-", "-", "greedy", greedy))
            for with_lm in (False, True):
                if with_lm and data["lm"] is None:
                    continue
                for beam in beams:
                    decoders = {"recog": ours(beam, data, with_lm)}
                    if peers["flashlight"]:
                        decoders["flashlight"] = flashlight(beam, data, with_lm, folder)
                    if peers["pyctcdecode"] and (peers["kenlm"] or not with_lm):
                        decoders["pyctcdecode"] = pyctcdecode(beam, data, with_lm, folder)
                    if peers["fast-ctc-decode"] and not with_lm:
                        decoders["fast-ctc-decode"] = fast_ctc_decode(beam, data)
                    # the same two also given the whole list in one call (flashlight: padded, with lengths)
                    decoders["recog (batch)"] = ours(beam, data, with_lm, batch=True)
                    if peers["flashlight"]:
                        decoders["flashlight (batch)"] = flashlight(beam, data, with_lm, folder, batch=True)
                    for name, decode in decoders.items():
                        how = measure_batch if name.endswith("(batch)") else measure
                        result = how(decode, data["log_probs"], data["texts"])
                        result.pop("cpu_seconds", None)
                        run = {"decoder": name, "beam": beam, "lm": with_lm, **result}
                        entry["runs"].append(run)
                        rows.append(
                            (kind, beam, "word 3-gram + lexicon" if with_lm else "none", name, result)
                        )
                        print(_row(rows[-1]), flush=True)
                    _ratios(entry["runs"], beam, with_lm)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'input':10} {'beam':>4} {'LM':22} {'decoder':16} {'frames/s':>10} {'WER':>7} {'CER':>7}")
    for row in rows:
        print(_row(row))
    print(f"\nwrote {args.out}")
    return 0


def _greedy(log_probs: np.ndarray) -> str:
    best = log_probs.argmax(axis=1)
    keep = (best != 0) & np.concatenate([[True], best[1:] != best[:-1]])
    return VOCAB.decode(best[keep].tolist())


def _ratios(runs: list[dict], beam: int, with_lm: bool) -> None:
    """recog's frames/s over the faster of pyctcdecode and flashlight, stored on recog's runs: one
    utterance per call against the peers called so; the batch call against every peer run."""
    same = [r for r in runs if r["beam"] == beam and r["lm"] == with_lm]
    single = [r["frames_per_s"] for r in same if r["decoder"] in ("pyctcdecode", "flashlight")]
    every = [r["frames_per_s"] for r in same if r["decoder"].split()[0] in ("pyctcdecode", "flashlight")]
    for run in same:
        if run["decoder"] == "recog" and single:
            run["speedup_vs_faster_peer"] = round(run["frames_per_s"] / max(single), 2)
        if run["decoder"] == "recog (batch)" and every:
            run["speedup_vs_faster_peer"] = round(run["frames_per_s"] / max(every), 2)


def _row(row: tuple) -> str:
    kind, beam, lm, name, result = row
    speed = result.get("frames_per_s", 0)
    return f"{kind:10} {beam!s:>4} {lm:22} {name:16} {speed:>10,} {result['wer']:>7.3f} {result['cer']:>7.3f}"


if __name__ == "__main__":
    sys.exit(main())
