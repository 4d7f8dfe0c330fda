"""Reading one ink input (pen strokes) into a clean `Ink`: W3C InkML, IAM-OnDB XML, or JSON.

Coordinates keep the file's units with y growing downwards (screen and scanner convention, as in
IAM-OnDB and most InkML producers). XML goes through defusedxml: documents that declare entities
(entity-expansion bombs, external entities) are refused before anything is expanded.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree
import numpy as np

INK_EXTENSIONS = (".inkml", ".xml", ".json")
MAX_INK_BYTES = 16 * 1024 * 1024
"""Largest ink file read: a line of ink is kilobytes, a page of IAM-OnDB XML about a megabyte; parsing
costs some 20x the file size in memory, so this bounds the parse."""
MAX_INK_POINTS = 200_000
"""Most pen points one ink input may hold: a handwritten line has a few thousand, a page some tens of
thousands. Counted while parsing, before the points become arrays."""


class InkError(Exception):
    """An ink input that cannot be used; the message names the file and the reason."""


@dataclass
class Ink:
    """Pen-down strokes, each an (n, 2) float64 array of x, y; `times` (seconds, one array per stroke)
    when the source recorded them; `name`, the file it was read from, for error messages."""

    strokes: list[np.ndarray]
    times: list[np.ndarray] | None = None
    name: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.strokes = [np.asarray(s, dtype=np.float64).reshape(-1, 2) for s in self.strokes]
        if self.times is not None:
            self.times = [np.asarray(t, dtype=np.float64).reshape(-1) for t in self.times]
            if [len(t) for t in self.times] != [len(s) for s in self.strokes]:
                raise ValueError("Ink: times must have one value per point of each stroke")

    @property
    def num_points(self) -> int:
        return sum(len(stroke) for stroke in self.strokes)

    def points(self) -> np.ndarray:
        """All points as one (n, 2) array in writing order."""
        if not self.strokes:
            return np.zeros((0, 2))
        return np.concatenate(self.strokes)

    def stroke_ids(self) -> np.ndarray:
        """(n,) index of the stroke each point belongs to."""
        return np.repeat(np.arange(len(self.strokes)), [len(s) for s in self.strokes])

    def bounds(self) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max)."""
        points = self.points()
        return (*points.min(axis=0), *points.max(axis=0))

    def map_points(self, function) -> Ink:
        """A copy whose strokes are function(stroke) (same number of points); times are kept."""
        return Ink([function(s) for s in self.strokes], self.times)


# ---------------------------------------------------------------- compact storage (shards)
def encode_ink(ink: Ink) -> bytes:
    """npz bytes (no pickles): float32 points, stroke ends, and times when present."""
    buffer = io.BytesIO()
    points = ink.points()
    arrays = {"ends": np.cumsum([len(s) for s in ink.strokes]).astype(np.int64)}
    if len(points) and np.all(points == np.rint(points)) and np.abs(points).max() < 2**30:
        # Digitiser units: integer steps between points compress to a fraction of float32.
        arrays["point_steps"] = np.diff(points, axis=0, prepend=0.0).astype(np.int32)
    else:
        arrays["points"] = points.astype(np.float32)
    if ink.times is not None and len(points):
        times = np.concatenate(ink.times)
        arrays["time0"] = np.array(times[0], dtype=np.float64)
        milliseconds = np.rint((times - times[0]) * 1000.0)
        if np.allclose(milliseconds / 1000.0, times - times[0], rtol=0, atol=1e-6):
            arrays["time_steps_ms"] = np.diff(milliseconds, prepend=0.0).astype(np.int32)
        else:
            arrays["times"] = (times - times[0]).astype(np.float32)
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def decode_ink(data: bytes, name: str = "<bytes>") -> Ink:
    """Inverse of `encode_ink`; InkError for anything else."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            ends = archive["ends"]
            if "point_steps" in archive.files:
                points = np.cumsum(archive["point_steps"].astype(np.float64), axis=0)
            else:
                points = archive["points"]
            times = None
            if "time_steps_ms" in archive.files:
                steps = archive["time_steps_ms"].astype(np.float64)
                times = np.cumsum(steps) / 1000.0 + float(archive["time0"])
            elif "times" in archive.files:
                times = archive["times"].astype(np.float64) + float(archive["time0"])
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise InkError(f"{name}: not an encoded ink sample ({type(error).__name__}: {error})") from None
    starts = np.concatenate([[0], ends[:-1]]) if len(ends) else []
    strokes = [points[a:b].astype(np.float64) for a, b in zip(starts, ends, strict=True)]
    stroke_times = [times[a:b] for a, b in zip(starts, ends, strict=True)] if times is not None else None
    return _checked(Ink(strokes, stroke_times), name)


# ---------------------------------------------------------------- reading
def read_ink(source: str | Path | bytes, name: str | None = None, fmt: str | None = None) -> Ink:
    """Read an ink file (or its bytes). Format by `fmt` ('inkml', 'iam', 'json'), else by content."""
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    data = source if isinstance(source, bytes) else _read_bytes(Path(source), label)
    if len(data) > MAX_INK_BYTES:
        raise InkError(f"{label}: {len(data)} bytes is too large for one ink sample")
    head = data.lstrip()[:1]
    if not head:
        raise InkError(f"{label}: empty file")
    if fmt == "json" or (fmt is None and head in (b"{", b"[")):
        return _checked(parse_json(data, label), label)
    if fmt not in (None, "inkml", "iam") or (fmt is None and head != b"<"):
        raise InkError(f"{label}: not an ink file (expected InkML, IAM-OnDB XML or JSON)")
    root = _parse_xml(data, label)
    tag = _local(root.tag)
    if fmt == "inkml" or (fmt is None and tag == "ink"):
        return _checked(parse_inkml(root, label), label)
    if fmt == "iam" or (fmt is None and (tag == "StrokeSet" or root.find(".//StrokeSet") is not None)):
        return _checked(parse_iam(root, label), label)
    raise InkError(f"{label}: XML root <{tag}> is neither InkML <ink> nor IAM-OnDB (no <StrokeSet>)")


def _read_bytes(path: Path, label: str) -> bytes:
    try:
        if path.is_dir():
            raise InkError(f"{label}: is a folder, not an ink file")
        if path.stat().st_size > MAX_INK_BYTES:
            raise InkError(f"{label}: {path.stat().st_size} bytes is too large for one ink sample")
        return path.read_bytes()
    except FileNotFoundError:
        raise InkError(f"{label}: file not found") from None
    except PermissionError:
        raise InkError(f"{label}: permission denied") from None
    except OSError as error:
        raise InkError(f"{label}: cannot read ({error.strerror or error})") from None


def _parse_xml(data: bytes, label: str) -> Element:
    try:
        return defusedxml.ElementTree.fromstring(data)
    except defusedxml.EntitiesForbidden:
        raise InkError(
            f"{label}: XML declares entities, refused (entity-expansion bomb or external entity)"
        ) from None
    except (defusedxml.DTDForbidden, defusedxml.ExternalReferenceForbidden, defusedxml.NotSupportedError):
        raise InkError(f"{label}: XML refers to external resources, refused") from None
    except ParseError as error:
        raise InkError(f"{label}: malformed XML ({error})") from None


def _local(tag: str) -> str:
    """Tag name without its namespace."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _count(points: int, label: str, so_far: bool = False) -> None:
    """InkError once an input holds more than MAX_INK_POINTS points (`so_far`: counted while parsing)."""
    if points > MAX_INK_POINTS:
        raise InkError(
            f"{label}: {'at least ' if so_far else ''}{points} points, more than one ink input may hold "
            f"(MAX_INK_POINTS = {MAX_INK_POINTS})"
        )


def _checked(ink: Ink, label: str) -> Ink:
    if not ink.strokes or ink.num_points == 0:
        raise InkError(f"{label}: no pen strokes")
    _count(ink.num_points, label)
    for index, stroke in enumerate(ink.strokes):
        if len(stroke) == 0:
            raise InkError(f"{label}: stroke {index + 1} has no points")
        if not np.all(np.isfinite(stroke)):
            raise InkError(f"{label}: stroke {index + 1} has NaN or infinite coordinates")
    if ink.times is not None and not all(np.all(np.isfinite(t)) for t in ink.times):
        raise InkError(f"{label}: NaN or infinite time stamps")
    ink.name = label
    return ink


# ---------------------------------------------------------------- JSON
def parse_json(data: bytes, label: str) -> Ink:
    """`{"strokes": [[[x, y], ...], ...]}`, each point optionally [x, y, t]; a bare list of strokes too."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise InkError(f"{label}: malformed JSON ({error})") from None
    strokes = document.get("strokes") if isinstance(document, dict) else document
    if not isinstance(strokes, list):
        raise InkError(f"{label}: expected an object with a 'strokes' list")
    _count(sum(len(stroke) if isinstance(stroke, list) else 1 for stroke in strokes), label)
    points, times = [], []
    for index, stroke in enumerate(strokes, start=1):
        try:
            array = np.asarray(stroke, dtype=np.float64)
        except (ValueError, TypeError):
            raise InkError(f"{label}: stroke {index} is not a list of [x, y] or [x, y, t] numbers") from None
        if array.ndim != 2 or array.shape[1] not in (2, 3) or len(array) == 0:
            raise InkError(f"{label}: stroke {index} is not a list of [x, y] or [x, y, t] points")
        points.append(array[:, :2])
        times.append(array[:, 2] if array.shape[1] == 3 else None)
    has_times = [t is not None for t in times]
    if any(has_times) and not all(has_times):
        raise InkError(f"{label}: some strokes have time stamps and others not")
    return Ink(points, times if points and all(has_times) else None)


# ---------------------------------------------------------------- IAM-OnDB
def parse_iam(root: Element, label: str) -> Ink:
    """`<StrokeSet><Stroke><Point x= y= time=/>...</Stroke>...</StrokeSet>` (time optional)."""
    points, times, total = [], [], 0
    for index, stroke in enumerate(root.iter("Stroke"), start=1):
        rows = []
        for point in stroke.iter("Point"):
            total += 1
            _count(total, label, so_far=True)
            try:
                x, y = float(point.attrib["x"]), float(point.attrib["y"])
                t = float(point.attrib["time"]) if "time" in point.attrib else math.nan
            except KeyError as error:
                raise InkError(f"{label}: stroke {index}: a <Point> has no {error.args[0]!r}") from None
            except ValueError as error:
                raise InkError(f"{label}: stroke {index}: bad <Point> value ({error})") from None
            rows.append((x, y, t))
        if not rows:
            raise InkError(f"{label}: stroke {index} has no points")
        array = np.asarray(rows)
        points.append(array[:, :2])
        times.append(array[:, 2])
    timed = points and not any(np.isnan(t).any() for t in times)
    return Ink(points, times if timed else None)


# ---------------------------------------------------------------- InkML
_NUMBER = re.compile(r"""\s*([!'"]?)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|\*|\?|T|F)""")


def _trace_format_channels(element: Element) -> list[str]:
    return [child.attrib.get("name", "") for child in element if _local(child.tag) == "channel"]


def _formats(root: Element) -> tuple[dict[str, list[str]], dict[str, str], list[str] | None]:
    """Named traceFormats (by xml:id), contexts (xml:id -> traceFormat id), and the document default."""
    formats: dict[str, list[str]] = {}
    contexts: dict[str, str] = {}
    default = None
    xml_id = "{http://www.w3.org/XML/1998/namespace}id"
    for element in root.iter():
        tag = _local(element.tag)
        if tag == "traceFormat":
            channels = _trace_format_channels(element)
            identifier = element.attrib.get(xml_id) or element.attrib.get("id")
            if identifier:
                formats[identifier] = channels
            if default is None or not identifier:
                default = channels
        elif tag == "context":
            identifier = element.attrib.get(xml_id) or element.attrib.get("id")
            for child in element:
                if _local(child.tag) == "traceFormat" and identifier:
                    reference = child.attrib.get("href", "").lstrip("#")
                    own = child.attrib.get(xml_id) or child.attrib.get("id")
                    contexts[identifier] = reference or own or ""
    return formats, contexts, default


def _trace_values(text: str, width: int | None, label: str, number: int) -> np.ndarray:
    """Decode one <trace>: points separated by commas, values by spaces or signs; ' and " prefixes
    switch a channel to first / second differences (InkML 1.0 section 3.2.1)."""
    rows: list[list[float]] = []
    modes: list[str] = []
    velocity: list[float] = []
    for point_number, chunk in enumerate(text.split(","), start=1):
        chunk = chunk.strip()
        if not chunk:
            continue
        values, position = [], 0
        while position < len(chunk):
            match = _NUMBER.match(chunk, position)
            if not match or match.end() == position:
                raise InkError(f"{label}: trace {number}, point {point_number}: cannot read {chunk!r}")
            values.append((match.group(1), match.group(2)))
            position = match.end()
            while position < len(chunk) and chunk[position].isspace():
                position += 1
        if width is not None and len(values) != width:
            raise InkError(
                f"{label}: trace {number}, point {point_number}: {len(values)} values, "
                f"the trace format has {width} channels"
            )
        if rows and len(values) != len(rows[-1]):
            raise InkError(f"{label}: trace {number}, point {point_number}: channel count changes")
        if not modes:
            modes = ["!"] * len(values)
            velocity = [0.0] * len(values)
        row = []
        for column, (prefix, token) in enumerate(values):
            if prefix:
                modes[column] = prefix
            previous = rows[-1][column] if rows else 0.0
            if token in ("*", "?"):
                value = previous
            elif token in ("T", "F"):
                value = 1.0 if token == "T" else 0.0
            else:
                value = float(token)
            if modes[column] == "'":
                value = previous + value
            elif modes[column] == '"':
                value = previous + velocity[column] + value
            velocity[column] = value - previous if rows else 0.0
            row.append(value)
        rows.append(row)
    if not rows:
        raise InkError(f"{label}: trace {number} has no points")
    return np.asarray(rows, dtype=np.float64)


def parse_inkml(root: Element, label: str) -> Ink:
    """Every <trace> in document order; X and Y (and T when present) located by the trace format."""
    formats, contexts, default = _formats(root)
    points, times, total = [], [], 0
    for number, trace in enumerate((e for e in root.iter() if _local(e.tag) == "trace"), start=1):
        channels = None
        context = trace.attrib.get("contextRef", "").lstrip("#")
        if context and contexts.get(context) in formats:
            channels = formats[contexts[context]]
        channels = channels or default
        values = _trace_values(trace.text or "", len(channels) if channels else None, label, number)
        total += len(values)
        _count(total, label, so_far=True)
        names = [c.upper() for c in channels] if channels else ["X", "Y", "T"][: values.shape[1]]
        if "X" not in names or "Y" not in names:
            raise InkError(f"{label}: the trace format has no X and Y channels ({', '.join(names)})")
        if values.shape[1] < 2:
            raise InkError(f"{label}: trace {number} has fewer than two channels")
        points.append(values[:, [names.index("X"), names.index("Y")]])
        times.append(values[:, names.index("T")] if "T" in names else None)
    timed = points and all(t is not None for t in times)
    return Ink(points, times if timed else None)
