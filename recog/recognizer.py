"""Checkpoint -> features -> model -> decoder: the one code path every CLI and evaluation uses."""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from pathlib import Path

import numpy as np
import torch

from recog.checkpoint import CheckpointError, load_checkpoint
from recog.config import DecodeConfig, FeatureConfig, ModelConfig, config_from_dict
from recog.datasets.manifest import Utterance
from recog.datasets.shards import from_int16
from recog.decode.beam import BeamDecoder, write_lexicon
from recog.decode.greedy import GreedyDecoder
from recog.decode.transcript import FileTranscript, Transcript
from recog.features.speech import CMVN, SpeechFeatures
from recog.metrics import ErrorRate
from recog.model import CTCModel
from recog.vocab import Vocab


class Recognizer:
    """A trained speech model ready to decode; `load` reads a checkpoint without executing code."""

    def __init__(
        self,
        model: CTCModel,
        vocab: Vocab,
        features: SpeechFeatures,
        cmvn: CMVN,
        decode: DecodeConfig,
        language_model: dict | None = None,
        device: str = "cpu",
    ):
        self.model, self.vocab, self.features, self.cmvn = model.eval().to(device), vocab, features, cmvn
        self.decode_config, self.language_model, self.device = decode, language_model, device
        self.frame_seconds = features.config.hop_length * model.config.stack / features.config.sample_rate
        self._decoders: dict[str, object] = {}

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Recognizer:
        payload = load_checkpoint(path)
        try:
            vocab = Vocab(payload["vocab"])
            features = SpeechFeatures(config_from_dict(FeatureConfig, payload["features"]))
            model = CTCModel(
                config_from_dict(ModelConfig, payload["model_config"]), payload["input_dim"], len(vocab)
            )
            model.load_state_dict(payload["model_state"])
            decode = config_from_dict(DecodeConfig, payload.get("decode", {}))
            cmvn = CMVN.from_state(payload["cmvn"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(
                f"{path}: checkpoint is incomplete or from an incompatible version ({error})"
            ) from None
        return cls(model, vocab, features, cmvn, decode, payload.get("language_model"), device)

    def decoder(self, kind: str = "greedy"):
        if kind not in self._decoders:
            if kind == "greedy":
                self._decoders[kind] = GreedyDecoder(self.vocab, self.frame_seconds)
            elif kind == "beam":
                lexicon, lm = self._language_model_files()
                self._decoders[kind] = BeamDecoder(
                    self.vocab, self.decode_config, lexicon, lm, self.frame_seconds
                )
            else:
                raise ValueError(f"unknown decoder {kind!r}: expected greedy or beam")
        return self._decoders[kind]

    def _language_model_files(self) -> tuple[str | None, str | None]:
        """The lexicon and ARPA text travel inside the checkpoint; the decoder needs them as files."""
        if not self.language_model:
            return None, None
        digest = hashlib.sha1(self.language_model["arpa"].encode()).hexdigest()[:16]
        folder = Path(tempfile.gettempdir()) / f"recog-lm-{digest}"
        folder.mkdir(exist_ok=True)
        paths = []
        for name in ("lexicon", "arpa"):
            path = folder / name
            if not path.exists():
                partial = folder / f".{name}.partial"
                partial.write_text(self.language_model[name])
                partial.replace(path)
            paths.append(str(path))
        return paths[0], paths[1]

    def frames(self, samples: np.ndarray) -> torch.Tensor:
        """(time, feat) normalised feature frames of one waveform (no model: safe in worker processes)."""
        return self.cmvn(self.features(samples))

    @torch.inference_mode()
    def forward(self, frames: list[torch.Tensor], precision: str = "fp32") -> list[torch.Tensor]:
        """One padded batch through the model: per input (time', vocab) log-probs on the CPU.

        `precision` "bf16" (or "fp16" on CUDA) runs under autocast, as training does."""
        lengths = torch.tensor([f.shape[0] for f in frames])
        padded = torch.nn.utils.rnn.pad_sequence(frames, batch_first=True).to(
            self.device
        )  # (batch, time, feat)
        kind = torch.device(self.device).type
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        with torch.autocast(kind, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            log_probs, out_lengths = self.model(padded, lengths.to(self.device))
        return [log_probs[row, : int(out_lengths[row])].float().cpu() for row in range(len(frames))]

    @torch.inference_mode()
    def log_probs(self, waveforms: list[np.ndarray], batch_frames: int = 60000) -> list[torch.Tensor]:
        """Per input (time', vocab) log-probs, computed in length-sorted batches."""
        frames = [self.frames(samples) for samples in waveforms]
        order = sorted(range(len(frames)), key=lambda i: frames[i].shape[0])
        results: list[torch.Tensor | None] = [None] * len(frames)
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and frames[order[end]].shape[0] * (end - start + 1) <= batch_frames:
                end += 1
            batch = order[start:end]
            for index, log_probs in zip(batch, self.forward([frames[i] for i in batch]), strict=True):
                results[index] = log_probs
            start = end
        return results

    def decode(self, log_probs: list[torch.Tensor], kind: str = "greedy") -> list[Transcript]:
        decoder = self.decoder(kind)
        transcripts = []
        for item in log_probs:
            transcripts.extend(decoder(item.unsqueeze(0), torch.tensor([item.shape[0]])))
        return transcripts

    def configure_beam(self, beam: int | None = None, lm: str | None = None) -> None:
        """Decoding overrides for this session: the beam width, and another word LM (an ARPA file,
        whose words join the checkpoint's lexicon) or "none" for lexicon-only beam search."""
        if beam is not None:
            if beam < 1:
                raise ValueError(f"beam width must be at least 1, got {beam}")
            self.decode_config = dataclasses.replace(self.decode_config, beam=beam)
        self._decoders.pop("beam", None)
        if lm is None:
            return
        lexicon = (self.language_model or {}).get("lexicon", "")
        words = {line.split("\t")[0] for line in lexicon.splitlines() if line.strip()}
        arpa = None
        if lm != "none":
            arpa = Path(lm)
            if not arpa.is_file():
                raise FileNotFoundError(f"{arpa}: language model not found")
            words |= arpa_words(arpa)
        folder = Path(tempfile.mkdtemp(prefix="recog-lm-"))
        lexicon_path = write_lexicon(words, self.vocab, folder / "lexicon")
        self._decoders["beam"] = BeamDecoder(
            self.vocab, self.decode_config, str(lexicon_path), str(arpa) if arpa else None, self.frame_seconds
        )

    def transcribe(self, paths: list[str], output: str | None = None, **options) -> list[FileTranscript]:
        """Transcribe files, folders, list files or manifests: one FileTranscript per audio file found,
        in input order (failed files carry `error`). The engine behind `recog transcribe`; `options` are
        those of `recog.transcribe.Options` (decoder="beam", workers=2, formats=("srt",), ...)."""
        from recog.transcribe import Options, run

        return run(self, paths, Options(output=output, collect=True, **options)).transcripts

    def tune_beam(
        self,
        utterances: list[Utterance],
        audio: dict[str, np.ndarray],
        lm_weights: tuple[float, ...] = (0.5, 1.0, 2.0),
        word_scores: tuple[float, ...] = (-1.0, 0.5, 2.0),
    ) -> dict:
        """Grid-search the LM weight and word insertion score on a (dev) set by WER; keeps the best."""
        log_probs = self.log_probs([from_int16(audio[u.key]) for u in utterances])
        results = []
        for lm_weight in lm_weights:
            for word_score in word_scores:
                self.decode_config = dataclasses.replace(
                    self.decode_config, lm_weight=lm_weight, word_score=word_score
                )
                self._decoders.pop("beam", None)
                rate = ErrorRate()
                for utterance, hypothesis in zip(utterances, self.decode(log_probs, "beam"), strict=True):
                    rate.add(utterance.text, hypothesis.text)
                results.append(
                    {"lm_weight": lm_weight, "word_score": word_score, "wer": rate.wer, "cer": rate.cer}
                )
        best = min(results, key=lambda r: (r["wer"], r["cer"]))
        self.decode_config = dataclasses.replace(
            self.decode_config, lm_weight=best["lm_weight"], word_score=best["word_score"]
        )
        self._decoders.pop("beam", None)
        return {"best": best, "grid": results}

    def evaluate(
        self,
        utterances: list[Utterance],
        audio: dict[str, np.ndarray],
        kinds=("greedy", "beam"),
        group_by="voice",
    ) -> dict:
        """WER/CER per decoder, overall and per group (e.g. per voice), with a few examples."""
        waveforms = [from_int16(audio[u.key]) for u in utterances]
        log_probs = self.log_probs(waveforms)
        report = {}
        for kind in kinds:
            if kind == "beam" and not self.language_model and self.decode_config.lexicon:
                continue
            hypotheses = self.decode(log_probs, kind)
            overall, groups = ErrorRate(), {}
            for utterance, hypothesis in zip(utterances, hypotheses, strict=True):
                overall.add(utterance.text, hypothesis.text)
                group = str(utterance.info.get(group_by, "all"))
                groups.setdefault(group, ErrorRate()).add(utterance.text, hypothesis.text)
            report[kind] = {
                **overall.as_dict(),
                "groups": {name: rate.as_dict() for name, rate in sorted(groups.items())},
                "examples": [
                    {"key": u.key, "ref": u.text, "hyp": h.text}
                    for u, h in list(zip(utterances, hypotheses, strict=True))[:4]
                ],
            }
        return report


def arpa_words(path: Path) -> set[str]:
    """The unigrams of an ARPA language model (its vocabulary), read without loading the rest."""
    words, inside = set(), False
    with path.open() as stream:
        for line in stream:
            line = line.strip()
            if line.startswith("\\"):
                if inside:
                    break
                inside = line == "\\1-grams:"
            elif inside and line:
                parts = line.split()
                if len(parts) >= 2 and parts[1] not in ("<s>", "</s>", "<unk>"):
                    words.add(parts[1])
    return words
