"""JSONL manifests: one utterance per line, audio either in a webdataset shard or in its own file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


class ManifestError(Exception):
    """A manifest that cannot be read; the message names the file, the line and the reason."""


@dataclass
class Utterance:
    key: str
    text: str
    duration: float = 0.0
    shard: str | None = None  # absolute path of the webdataset shard holding the audio
    audio: str | None = None  # absolute path of an audio file
    info: dict = field(default_factory=dict)  # voice, engine, ... (kept for per-group reports)

    @property
    def source(self) -> str:
        return f"{self.shard}:{self.key}" if self.shard else str(self.audio)


def read_manifest(path: str | Path) -> list[Utterance]:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    utterances = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ManifestError(f"{path}:{number}: not valid JSON ({error})") from None
        if not isinstance(entry, dict) or "text" not in entry:
            raise ManifestError(f"{path}:{number}: expected an object with 'text'")
        shard = entry.get("shard")
        audio = entry.get("audio") or entry.get("path")
        if not shard and not audio:
            raise ManifestError(f"{path}:{number}: needs 'audio' (a file) or 'shard' and 'key'")
        key = str(entry.get("key") or audio)
        known = {"key", "text", "duration", "shard", "audio", "path"}
        utterances.append(
            Utterance(
                key=key,
                text=str(entry["text"]),
                duration=float(entry.get("duration") or 0.0),
                shard=str((path.parent / shard).resolve()) if shard else None,
                audio=str((path.parent / audio).resolve()) if audio else None,
                info={k: v for k, v in entry.items() if k not in known},
            )
        )
    return utterances
