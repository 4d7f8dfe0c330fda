"""Writes one split of a generated corpus: webdataset shards and JSONL manifests in the format that
recog/datasets/manifest.py reads. Both corpus makers (speech, ink) write through it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path


class ManifestWriter:
    """One split's shards `shards/{split}-NNNN.tar` and its manifests `{split}.jsonl` (the "" manifest)
    and `{split}-NAME.jsonl` per extra NAME.

    A sample is its payload members (e.g. `flac`, or `png` and `ink.npz`) plus `fields` as its `json`
    member; a manifest line is `{"key", "shard", **fields}`, the shard relative to the manifest."""

    def __init__(
        self, root: Path, split: str, samples_per_shard: int, extra_manifests: Iterable[str] = ()
    ) -> None:
        from webdataset import ShardWriter  # imports torch: keep it out of worker start-up

        pattern = str(root / "shards" / f"{split}-%04d.tar")
        self.shards = ShardWriter(pattern, maxcount=samples_per_shard, verbose=0)
        self.manifests = {
            name: open(
                root / f"{split}-{name}.jsonl" if name else root / f"{split}.jsonl", "w", encoding="utf-8"
            )
            for name in ("", *extra_manifests)
        }

    def write(
        self,
        key: str,
        payload: Mapping[str, bytes],
        fields: dict[str, object],
        manifests: Iterable[str] | None = None,
    ) -> None:
        """Add one sample to the current shard and its line to `manifests` (names; None: all of them)."""
        self.shards.write({"__key__": key, **payload, "json": fields})
        line = json.dumps({"key": key, "shard": f"shards/{Path(self.shards.fname).name}", **fields}) + "\n"
        for name in self.manifests if manifests is None else manifests:
            self.manifests[name].write(line)

    def close(self) -> None:
        """Flush the last shard and the manifests."""
        self.shards.close()
        for manifest in self.manifests.values():
            manifest.close()
