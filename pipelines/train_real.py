"""`make train-speech DATA=...`, `make train-handwriting DATA=...`, `make train-handwriting-offline DATA=...`:
import a downloaded corpus (LibriSpeech, IAM-OnDB, IAM lines) with `recog data import` once, then train
and evaluate the matching config as the generated-corpus recipes do (report.json, results table).

    python -m pipelines.train_real librispeech --data /path/to/LibriSpeech [--config C] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from pipelines.recipe import run_recipe
from recog.config import Config, ConfigError, load_config
from recog.datasets.importers import cli as importer_cli
from recog.datasets.importers.output import REPORT, TOOL


class RecipeError(Exception):
    """A DATA folder, config or corpus folder this recipe cannot use; the message is one line."""


@dataclass(frozen=True)
class Recipe:
    """One real corpus: its importer format, the task its config must have, and where things go."""

    format: str
    task: str
    config: str
    out: str
    expected: str  # what DATA should be, for error lines


LIBRISPEECH_SUBSETS = ("train-clean-100", "dev-clean", "test-clean")
LIBRISPEECH_OPTIONAL = ("dev-other", "test-other")
# each split needs one of these task lists in DATA (the splits of the published recognition tasks)
TASK_LISTS = {
    "iam-ondb": {
        "train": ("trainset.txt",),
        "dev": ("testset_v.txt", "testset_t.txt"),
        "test": ("testset_f.txt",),
    },
    "iam-lines": {
        "train": ("trainset.txt",),
        "dev": ("validationset1.txt", "validationset2.txt"),
        "test": ("testset.txt",),
    },
}

RECIPES = {
    "librispeech": Recipe(
        "librispeech",
        "speech",
        "configs/librispeech-100.yaml",
        "runs/librispeech-100",
        "the LibriSpeech folder the OpenSLR archives unpack to, holding train-clean-100/, dev-clean/, test-clean/",
    ),
    "iam-ondb": Recipe(
        "iam-ondb",
        "ink",
        "configs/iam-ondb.yaml",
        "runs/iam-ondb",
        "the IAM-OnDB folder holding lineStrokes/, ascii/ and the task lists",
    ),
    "iam-lines": Recipe(
        "iam-lines",
        "image",
        "configs/iam-lines.yaml",
        "runs/iam-lines",
        "the IAM folder holding lines/, lines.txt (or ascii/lines.txt) and the task lists",
    ),
}


def _has_dir(data: Path, name: str) -> bool:
    return (data / name).is_dir() or (data / f"{name}-all").is_dir()


def sources(name: str, data: Path) -> list[Path]:
    """The folders to import from DATA for recipe `name`; RecipeError naming DATA when it lacks a part."""
    recipe = RECIPES[name]
    where = f"DATA={data}"
    if not data.is_dir():
        raise RecipeError(
            f"{where}: {'not a folder' if data.exists() else 'not found'} (expected {recipe.expected})"
        )
    data = Path(os.path.abspath(data))
    if name == "librispeech":
        if not (data / LIBRISPEECH_SUBSETS[0]).is_dir() and (data / "LibriSpeech").is_dir():
            data = data / "LibriSpeech"  # the folder the archives were unpacked in
        missing = [subset for subset in LIBRISPEECH_SUBSETS if not (data / subset).is_dir()]
        if missing:
            raise RecipeError(f"{where}: no {', '.join(missing)} in it (expected {recipe.expected})")
        return [data / s for s in LIBRISPEECH_SUBSETS + LIBRISPEECH_OPTIONAL if (data / s).is_dir()]
    if name == "iam-ondb":
        parts = [p for p in ("lineStrokes", "ascii") if not _has_dir(data, p)]
    else:
        has_table = (data / "lines.txt").is_file() or (data / "ascii" / "lines.txt").is_file()
        parts = [p for p, ok in (("lines/", _has_dir(data, "lines")), ("lines.txt", has_table)) if not ok]
    parts += [
        " or ".join(lists)
        for lists in TASK_LISTS[name].values()
        if not any((data / n).is_file() for n in lists)
    ]
    if parts:
        raise RecipeError(f"{where}: no {', '.join(parts)} in it (expected {recipe.expected})")
    return [data]


def previous_import(corpus: Path) -> dict | None:
    """The import-report.json a finished `recog data import` left in `corpus`, or None."""
    try:
        report = json.loads((corpus / REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and report.get("tool") == TOOL else None


def already_imported(name: str, corpus: Path, wanted: list[Path]) -> dict | None:
    """The report when `corpus` holds a complete import of exactly `wanted` (skip the import); None when
    it must be imported: nothing there, an unfinished one, or an import of other subsets of the same
    LibriSpeech download (the importer replaces its own earlier output). RecipeError when it holds an
    import of anything else: that folder is left alone."""
    report = previous_import(corpus)
    if report is None:
        return None  # new, empty, or not an import: the importer creates it or refuses with its reason
    previous = sorted(str(s) for s in report.get("sources", []))
    same = report.get("format") == RECIPES[name].format and previous == sorted(map(str, wanted))
    if same:
        files = report.get("files", [])
        complete = report.get("imported", 0) > 0 and all((corpus / f).is_file() for f in files)
        return report if complete else None
    if name == "librispeech" and report.get("format") == "librispeech":
        if {str(Path(s).parent) for s in previous} == {str(wanted[0].parent)}:
            return None
    shown = wanted[0] if len(wanted) == 1 else wanted[0].parent
    raise RecipeError(
        f"{corpus}: holds an import of {', '.join(previous) or 'other sources'} ({report.get('format')}), "
        f"not of {shown}; pass CORPUS=another/folder (train_real.py --corpus) or move it away"
    )


def load(config_path: str, overrides: list[str], task: str) -> Config:
    try:
        config = load_config(config_path, overrides)
    except ConfigError as error:
        raise RecipeError(str(error)) from None
    if config.task != task:
        raise RecipeError(f"{config_path}: task is {config.task!r}, this recipe trains {task} models")
    return config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", choices=list(RECIPES))
    parser.add_argument("--data", required=True, type=Path, metavar="DIR", help="the downloaded corpus")
    parser.add_argument("--config", help="default: the recipe's full-size config")
    parser.add_argument("--corpus", type=Path, metavar="DIR", help="import folder (default: data.root)")
    parser.add_argument("--out", help="run folder (default: runs/NAME)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT/last.pt")
    parser.add_argument("--workers", type=int, default=0, help="import processes (default: the importer's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    recipe = RECIPES[args.recipe]
    args.config, args.out = args.config or recipe.config, args.out or recipe.out
    try:
        wanted = sources(args.recipe, args.data)
        corpus = args.corpus or Path(load(args.config, args.set, recipe.task).data.root)
        args.set = [*args.set, f"data.root={corpus}"]
        load(args.config, args.set, recipe.task)
        report = already_imported(args.recipe, corpus, wanted)
    except RecipeError as error:
        print(f"train_real: {error}", file=sys.stderr)
        return 2
    if report is not None:
        print(
            f"{corpus}: already holds this import ({report['imported']} samples from "
            f"{', '.join(report['sources'])}; {REPORT}), not importing again"
        )
    else:
        workers = ["--workers", str(args.workers)] if args.workers > 0 else []
        command = [recipe.format, *map(str, wanted), "--out", str(corpus), *workers]
        print(f"[data] recog data import {' '.join(command)}", flush=True)
        status = importer_cli.main(command)
        if status != 0:
            return status
        report = previous_import(corpus) or {}
    summary = {
        k: report.get(k) for k in ("format", "sources", "imported", "failed", "splits", "problems_by_kind")
    }
    return run_recipe(
        args, extra=lambda config, root: {"config": args.config, "corpus": str(root), "import": summary}
    )


if __name__ == "__main__":
    sys.exit(main())
