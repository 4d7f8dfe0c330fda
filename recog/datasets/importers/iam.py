"""The IAM handwriting databases. IAM-OnDB (online): lineStrokes/**/FORM-NN.xml (StrokeSet/Stroke/Point
x y time) with ascii/**/FORM.txt, whose `CSR:` section's Nth line is the transcript of FORM-NN.
IAM lines (offline): lines/**/LINE.png with lines.txt (`id status graylevel components x y w h
transcription`, words joined by '|', entities such as &quot; decoded). Splits come from the task
lists when present (IAM-OnDB: trainset.txt, testset_v.txt, testset_t.txt, testset_f.txt; IAM:
trainset.txt, validationset1.txt, validationset2.txt, testset.txt; or --split-file SPLIT=FILE),
listing form or line ids; a line in none of them is reported and skipped."""

from __future__ import annotations

import html
from pathlib import Path

from recog.datasets.importers.base import (
    Candidate,
    Format,
    ImporterError,
    Keys,
    Options,
    Problem,
    Scan,
    normalise_text,
    split_lists,
    walk_files,
)
from recog.image import IMAGE_EXTENSIONS

ONDB_LISTS = {
    "trainset.txt": "train",
    "testset_v.txt": "dev",
    "testset_t.txt": "dev",
    "testset_f.txt": "test",
}
IAM_LISTS = {
    "trainset.txt": "train",
    "validationset1.txt": "dev",
    "validationset2.txt": "dev",
    "testset.txt": "test",
}


def _folder(sources: list[Path], name: str) -> list[Path]:
    """Each source that is the `name` folder (lineStrokes, ascii, lines; also NAME-all), or holds one."""
    found = []
    for source in sources:
        if source.is_dir() and source.name.lower().removesuffix("-all") == name.lower():
            found.append(source)
        else:
            found += [source / n for n in (name, f"{name}-all") if (source / n).is_dir()]
    return found


def _lists(sources: list[Path], names: dict[str, str], options: Options) -> dict[str, set[str]]:
    """The task lists in each source folder, or next to a source that is one of the database's folders
    (lineStrokes/, ascii/, lines/) or its lines.txt."""
    found: dict[str, list[Path]] = {}
    for source in sources:
        folders = [source] if source.is_dir() else []
        if source.is_file() or source.name.lower().removesuffix("-all") in ("linestrokes", "ascii", "lines"):
            folders.append(source.parent)
        for folder in folders:
            for name, split in names.items():
                if (folder / name).is_file() and folder / name not in found.get(split, []):
                    found.setdefault(split, []).append(folder / name)
    return split_lists(options, found)


def _split(line_id: str, form: str, lists: dict[str, set[str]]) -> str | None:
    for split, ids in lists.items():
        if line_id in ids or form in ids:
            return split
    return None


def csr_lines(path: Path) -> list[str] | None:
    """The lines of an IAM-OnDB ascii file's CSR: section (None when it has none)."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip().startswith("CSR:")]
    if not starts:
        return None
    section = lines[starts[0] + 1 :]
    while section and not section[0].strip():
        section.pop(0)
    while section and not section[-1].strip():
        section.pop()
    return section


def _add(
    result: Scan,
    keys: Keys,
    lists: dict[str, set[str]],
    line_id: str,
    form: str,
    text: str,
    path: Path,
    fields: dict[str, object],
    where: str,
) -> None:
    split = _split(line_id, form, lists)
    if lists and split is None:
        result.problems.append(Problem(str(path), "not in any split list, skipped", "not in a split list"))
        return
    key, taken = keys.new(line_id)
    if taken:
        result.problems.append(
            Problem(where, f"{line_id}: line id seen before, kept as {key}", "duplicate key")
        )
    result.candidates.append(Candidate(key, text, path, split, fields))


def scan_ondb(sources: list[Path], options: Options) -> Scan:
    stroke_folders, ascii_folders = _folder(sources, "lineStrokes"), _folder(sources, "ascii")
    if not stroke_folders or not ascii_folders:
        raise ImporterError(
            f"{', '.join(map(str, sources))}: expected IAM-OnDB's lineStrokes/ and ascii/ folders"
        )
    strokes = {path.stem: path for folder in stroke_folders for path in walk_files(folder, (".xml",))}
    lists, keys, result, used = _lists(sources, ONDB_LISTS, options), Keys(), Scan(), set()
    for transcript in (p for folder in ascii_folders for p in walk_files(folder, (".txt",))):
        form = transcript.stem
        section = csr_lines(transcript)
        if section is None:
            result.problems.append(Problem(str(transcript), "no CSR: section", "missing transcript"))
            continue
        for number, line in enumerate(section, start=1):
            line_id, text = f"{form}-{number:02d}", normalise_text(line)
            path = strokes.get(line_id)
            where = f"{transcript}:CSR line {number}"
            if path is None:
                result.problems.append(Problem(where, f"no lineStrokes file {line_id}.xml", "missing ink"))
                continue
            used.add(line_id)
            if not text:
                result.problems.append(Problem(str(path), f"empty transcript ({where})", "empty text"))
                continue
            _add(result, keys, lists, line_id, form, text, path, {"form": form, "text_id": form[:7]}, where)
    for line_id, path in sorted(strokes.items()):
        if line_id not in used:
            result.problems.append(
                Problem(str(path), "missing transcript (no CSR line for it in ascii/)", "missing transcript")
            )
    return result


def _writers(sources: list[Path]) -> dict[str, str]:
    """form id -> writer id from IAM's forms.txt (`a01-000u 000 2 prt 7 5 52 36`), when present."""
    writers = {}
    for source in sources:
        for table in (source / "forms.txt", source / "ascii" / "forms.txt", source.parent / "forms.txt"):
            if table.is_file():
                for line in table.read_text(encoding="utf-8", errors="replace").splitlines():
                    parts = line.split()
                    if len(parts) >= 2 and not line.startswith("#"):
                        writers[parts[0]] = parts[1]
    return writers


def scan_lines(sources: list[Path], options: Options) -> Scan:
    tables = [
        p
        for s in sources
        for p in ([s] if s.is_file() else [s / "lines.txt", s / "ascii" / "lines.txt"])
        if p.is_file()
    ]
    image_folders = _folder(sources, "lines")
    if not tables or not image_folders:
        raise ImporterError(
            f"{', '.join(map(str, sources))}: expected IAM's lines.txt and lines/ folder of PNGs"
        )
    images = {path.stem: path for folder in image_folders for path in walk_files(folder, IMAGE_EXTENSIONS)}
    lists, writers, keys, result, used = (
        _lists(sources, IAM_LISTS, options),
        _writers(sources),
        Keys(),
        Scan(),
        set(),
    )
    for table in tables:
        for number, line in enumerate(
            table.read_text(encoding="utf-8", errors="replace").splitlines(), start=1
        ):
            if not line.strip() or line.startswith("#"):
                continue
            where, parts = f"{table}:{number}", line.split(" ")
            if len(parts) < 9:
                result.problems.append(
                    Problem(where, f"line with too few fields ({len(parts)}, expected 9)", "too few fields")
                )
                continue
            line_id, status = parts[0], parts[1]
            text = normalise_text(html.unescape(" ".join(parts[8:]).replace("|", " ")))
            path = images.get(line_id)
            if path is None:
                result.problems.append(
                    Problem(where, f"{line_id}: image lines/.../{line_id}.png not found", "missing image")
                )
                continue
            used.add(line_id)
            if not text:
                result.problems.append(Problem(where, f"{line_id}: empty transcript", "empty text"))
                continue
            form = line_id.rsplit("-", 1)[0]
            fields: dict[str, object] = {"form": form, "status": status}
            if form in writers:
                fields["writer"] = writers[form]
            _add(result, keys, lists, line_id, form, text, path, fields, where)
    for line_id, path in sorted(images.items()):
        if line_id not in used:
            result.problems.append(
                Problem(str(path), "missing transcript (no line for it in lines.txt)", "missing transcript")
            )
    return result


ONDB = Format(
    "iam-ondb", "ink", ("form",), scan_ondb, "IAM-OnDB (lineStrokes/**.xml + ascii/**.txt CSR sections)"
)
LINES = Format("iam-lines", "image", ("writer", "form"), scan_lines, "IAM lines (lines/**.png + lines.txt)")
