"""What a transcription run is asked to do (`Options`), what it did (`Summary`), and its one error."""

from __future__ import annotations

from dataclasses import dataclass, field

from recog.decode.transcript import FileTranscript
from recog.jobs import JobError

FORMATS = ("jsonl", "txt", "srt", "vtt")


class TranscribeError(JobError):
    """A problem with the run as a whole (an option, a list file), not with one audio file."""


@dataclass
class Options:
    output: str | None = None  # the JSONL file, also the record that makes a rerun resume
    formats: tuple[str, ...] = ()  # per-file outputs into out_dir: txt, srt, vtt
    out_dir: str | None = None
    decoder: str = "beam"  # beam (with the checkpoint's LM and lexicon) | greedy
    precision: str = "fp32"  # fp32 | bf16 | fp16 (CUDA) | auto
    workers: int | None = None  # worker processes; None: one per core, 0: all in this process
    batch_seconds: float = 120.0  # padded audio per batch
    chunk_seconds: float = 30.0  # longer recordings are cut into pieces about this long
    overlap_seconds: float = 2.0  # context either side of a cut that is not in a pause
    references: str | None = None  # a JSONL manifest, or "txt": NAME.txt beside each audio file
    retry_failed: bool = False  # on resume, try again the files whose line has an error
    shard: tuple[int, int] | None = None  # (rank, world); None: from torchrun's environment
    progress: bool | None = None  # None: when stderr is a terminal
    stream: object = None  # where lines go without an output file (the CLI passes stdout)
    collect: bool = False  # keep every transcript for the caller (the Python API)
    model_in_workers: bool | None = None  # None: on the CPU yes, on a GPU the main process runs it


@dataclass
class Summary:
    files: int = 0  # in this rank's share
    resumed: int = 0  # already in the output
    transcribed: int = 0  # this run, failures included
    failed: int = 0  # lines with an error, resumed ones included
    audio_seconds: float = 0.0  # transcribed this run
    wall_seconds: float = 0.0
    seconds: dict = field(default_factory=dict)  # CPU seconds per stage: read, features, model, decode
    scores: dict | None = None  # WER/CER against references
    transcripts: list[FileTranscript] = field(default_factory=list)

    @property
    def rtf(self) -> float:
        return self.wall_seconds / self.audio_seconds if self.audio_seconds else 0.0

    def as_dict(self) -> dict:
        fields = ("files", "resumed", "transcribed", "failed", "audio_seconds", "wall_seconds", "seconds")
        return {**{name: getattr(self, name) for name in fields}, "rtf": self.rtf, "scores": self.scores}

    def line(self) -> str:
        text = (
            f"{self.files} files ({self.resumed} already done, {self.failed} failed), "
            f"{self.audio_seconds / 3600:.2f} h of audio in {self.wall_seconds:.1f} s: RTF {self.rtf:.4f}"
        )
        if self.scores:
            text += (
                f"; WER {100 * self.scores['wer']:.1f}% CER {100 * self.scores['cer']:.1f}%"
                f" on {self.scores['utterances']} files with references"
            )
        return text
