"""The input types recog reads, each a `Modality` (see base.py); `modality_for` builds one by name."""

from __future__ import annotations

from recog.modalities.base import DEFAULT_CHARS, Loaded, Located, Modality
from recog.modalities.image import ImageModality
from recog.modalities.ink import InkModality
from recog.modalities.speech import Speech

MODALITIES: dict[str, type[Modality]] = {kind.name: kind for kind in (Speech, InkModality, ImageModality)}

__all__ = ["DEFAULT_CHARS", "MODALITIES", "Loaded", "Located", "Modality", "modality_for", "from_config"]


def modality_for(name: str, features=None) -> Modality:
    """The modality called `name` ("speech", "ink", "image"), with its front end built from `features`:
    its config dataclass, the dict a checkpoint holds, or None for the defaults."""
    from recog.config import config_from_dict

    if name not in MODALITIES:
        raise ValueError(f"unknown task {name!r}: expected one of {', '.join(MODALITIES)}")
    kind = MODALITIES[name]
    features_type, config_type = kind.feature_types
    if features is None:
        config = config_type()
    elif isinstance(features, config_type):
        config = features
    else:
        config = config_from_dict(config_type, dict(features))
    return kind(features_type(config))


def from_config(config) -> Modality:
    """The modality a training config asks for, with its feature section."""
    kind = MODALITIES[config.task]
    return modality_for(config.task, getattr(config, kind.feature_section))


def kind_of(path: str) -> type[Modality] | None:
    """The modality whose files have `path`'s extension, if any."""
    from pathlib import Path

    suffix = Path(path).suffix.lower()
    return next((kind for kind in MODALITIES.values() if suffix in kind.suffixes), None)
