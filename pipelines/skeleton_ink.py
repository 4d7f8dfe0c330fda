"""Ink traced from outline fonts: render a line of text, thin it to a one-pixel skeleton (Zhang-Suen),
and trace the skeleton into pen strokes, so any installed font can be written like a pen would.

The skeleton becomes a graph (endpoints, junctions, pixel paths between them); spurs left by thick
corners are pruned, paths that run straight on through a junction are joined into one stroke, the
pixel staircase is smoothed away, and strokes are ordered and directed the way a writer goes: left to
right, top to bottom. The result is an `Ink` in x-height units (y down, baseline at 0), like
pipelines.hershey.write_text, ready for the same writer perturbations and pen clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from pipelines.outline_fonts import OutlineFont, load_face
from recog.ink import Ink

# Neighbour offsets (row, column) clockwise from north; diagonal ones are the odd indices.
_OFFSETS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


@numba.njit(cache=True)
def _zhang_suen(image: np.ndarray) -> None:
    """Thin a padded uint8 0/1 image in place until nothing changes."""
    rows, columns = image.shape
    changed = True
    marked = np.zeros((rows * columns, 2), dtype=np.int64)
    while changed:
        changed = False
        for step in range(2):
            count = 0
            for r in range(1, rows - 1):
                for c in range(1, columns - 1):
                    if image[r, c] == 0:
                        continue
                    p2, p3, p4 = image[r - 1, c], image[r - 1, c + 1], image[r, c + 1]
                    p5, p6, p7 = image[r + 1, c + 1], image[r + 1, c], image[r + 1, c - 1]
                    p8, p9 = image[r, c - 1], image[r - 1, c - 1]
                    neighbours = p2 + p3 + p4 + p5 + p6 + p7 + p8 + p9
                    if neighbours < 2 or neighbours > 6:
                        continue
                    ring = (p2, p3, p4, p5, p6, p7, p8, p9, p2)
                    transitions = 0
                    for k in range(8):
                        if ring[k] == 0 and ring[k + 1] == 1:
                            transitions += 1
                    if transitions != 1:
                        continue
                    if step == 0 and (p2 * p4 * p6 != 0 or p4 * p6 * p8 != 0):
                        continue
                    if step == 1 and (p2 * p4 * p8 != 0 or p2 * p6 * p8 != 0):
                        continue
                    marked[count, 0] = r
                    marked[count, 1] = c
                    count += 1
            for k in range(count):
                image[marked[k, 0], marked[k, 1]] = 0
            if count:
                changed = True


@numba.njit(cache=True)
def _keep_vanished(mask: np.ndarray, skeleton: np.ndarray) -> None:
    """Zhang-Suen erases small blobs (a 2 x 2 dot) entirely: put a pixel back at the middle of every
    ink component the skeleton lost (padded arrays, skeleton changed in place)."""
    rows, columns = mask.shape
    seen = np.zeros(mask.shape, dtype=np.uint8)
    stack = np.empty((rows * columns, 2), dtype=np.int64)
    for r0 in range(1, rows - 1):
        for c0 in range(1, columns - 1):
            if mask[r0, c0] == 0 or seen[r0, c0]:
                continue
            seen[r0, c0] = 1
            stack[0, 0], stack[0, 1] = r0, c0
            top, found, count, sum_r, sum_c = 1, False, 0, 0, 0
            while top:
                top -= 1
                r, c = stack[top, 0], stack[top, 1]
                found = found or skeleton[r, c] != 0
                count += 1
                sum_r += r
                sum_c += c
                for dr in range(-1, 2):
                    for dc in range(-1, 2):
                        if mask[r + dr, c + dc] and not seen[r + dr, c + dc]:
                            seen[r + dr, c + dc] = 1
                            stack[top, 0], stack[top, 1] = r + dr, c + dc
                            top += 1
            if not found:
                skeleton[(sum_r + count // 2) // count, (sum_c + count // 2) // count] = 1


def thin(mask: np.ndarray) -> np.ndarray:
    """A one-pixel-wide skeleton (bool) of a binary mask (Zhang & Suen 1984); every ink component
    keeps at least one pixel."""
    original = np.pad(np.asarray(mask, dtype=np.uint8), 1)
    image = original.copy()
    _zhang_suen(image)
    _keep_vanished(original, image)
    return image[1:-1, 1:-1].astype(bool)


# ---------------------------------------------------------------- the skeleton as a graph
def _neighbours(skeleton: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Skeleton pixels (n, 2), the index of each one's 8 neighbours (n, 8; -1 for none) and which of
    them are links: a diagonal step counts only when neither pixel beside it is set (else the
    staircase makes false three-way junctions)."""
    rows, columns = np.nonzero(skeleton)
    index = -np.ones((skeleton.shape[0] + 2, skeleton.shape[1] + 2), dtype=np.int64)
    index[rows + 1, columns + 1] = np.arange(len(rows))
    around = np.stack([index[rows + 1 + dr, columns + 1 + dc] for dr, dc in _OFFSETS], axis=1)
    links = around >= 0
    for k in (1, 3, 5, 7):
        links[:, k] &= ~links[:, k - 1] & ~links[:, (k + 1) % 8]
    return np.stack([rows, columns], axis=1), around, links


@dataclass
class _Edge:
    ends: tuple[int, int]  # node ids
    points: np.ndarray  # (n, 2) row, column from ends[0] to ends[1]

    @property
    def length(self) -> float:
        return float(np.hypot(*np.diff(self.points, axis=0).T).sum()) if len(self.points) > 1 else 0.0


def skeleton_graph(skeleton: np.ndarray) -> tuple[np.ndarray, list[_Edge]]:
    """Node positions (row, column) and the pixel paths between them; junction pixel clusters are
    one node each, and a closed loop without nodes gets one node of its own."""
    pixels, around, links = _neighbours(skeleton)
    adjacency = [[j for j in row if j >= 0] for row in np.where(links, around, -1).tolist()]
    degree = links.sum(axis=1)
    node_of = -np.ones(len(pixels), dtype=np.int64)
    positions: list[np.ndarray] = []
    for i in np.nonzero(degree >= 3)[0]:  # touching junction pixels are one node
        if node_of[i] >= 0:
            continue
        node, members, todo = len(positions), [], [int(i)]
        node_of[i] = node
        while todo:
            pixel = todo.pop()
            members.append(pixel)
            for j in around[pixel]:
                if j >= 0 and node_of[j] < 0 and degree[j] >= 3:
                    node_of[j] = node
                    todo.append(int(j))
        positions.append(pixels[members].mean(axis=0))
    edges: list[_Edge] = []
    for i in np.nonzero(degree < 2)[0]:
        node_of[i] = len(positions)
        positions.append(pixels[i].astype(np.float64))
        if degree[i] == 0:  # a lone pixel: a dot
            edges.append(_Edge((int(node_of[i]), int(node_of[i])), pixels[i : i + 1].astype(np.float64)))

    walked = np.zeros(len(pixels), dtype=bool)  # path pixels (degree 2) already in an edge
    done_steps: set[tuple[int, int]] = set()

    def walk(start: int, first: int) -> None:
        path, previous, current = [start], start, first
        while node_of[current] < 0 and not walked[current]:
            walked[current] = True
            path.append(current)
            following = [n for n in adjacency[current] if n != previous]
            if not following:
                break
            previous, current = current, following[0]
        if node_of[current] < 0:  # came back round to a walked pixel: a loop through a node
            path.append(current)
            end_node = node_of[start]
        else:
            path.append(current)
            done_steps.add((current, previous))
            end_node = int(node_of[current])
        points = pixels[path].astype(np.float64)
        points[0] = positions[node_of[start]]
        points[-1] = positions[end_node]
        edges.append(_Edge((int(node_of[start]), end_node), points))

    for start in np.nonzero(node_of >= 0)[0]:
        for first in adjacency[start]:
            if node_of[first] >= 0 and node_of[first] == node_of[start]:
                continue  # inside one junction cluster
            if (start, first) in done_steps or (node_of[first] < 0 and walked[first]):
                continue
            done_steps.add((start, first))
            walk(int(start), first)
    for start in np.nonzero(node_of < 0)[0]:  # closed loops with no node on them
        if walked[start]:
            continue
        node_of[start] = len(positions)
        positions.append(pixels[start].astype(np.float64))
        if adjacency[start]:
            walk(int(start), adjacency[start][0])
    return np.array(positions).reshape(-1, 2), edges


def prune_spurs(positions: np.ndarray, edges: list[_Edge], length: float) -> list[_Edge]:
    """Drop short branches from a junction to a free end (thinning artefacts at thick corners)."""
    for _ in range(2):
        degree = np.bincount([n for e in edges for n in e.ends], minlength=len(positions))
        kept = []
        for edge in edges:
            a, b = edge.ends
            spur = (degree[a] == 1 and degree[b] >= 3) or (degree[b] == 1 and degree[a] >= 3)
            if not (spur and edge.length < length):
                kept.append(edge)
        if len(kept) == len(edges):
            break
        edges = kept
    return edges


def merge_close_junctions(positions: np.ndarray, edges: list[_Edge], length: float) -> list[_Edge]:
    """Contract short paths between two junctions: thinning splits a crossing (x, t, f) into two
    three-way junctions, and only one four-way node lets both lines run straight through."""
    degree = np.bincount([n for e in edges for n in e.ends], minlength=len(positions))
    root = list(range(len(positions)))

    def find(node: int) -> int:
        while root[node] != node:
            root[node] = root[root[node]]
            node = root[node]
        return node

    kept = []
    for edge in edges:
        a, b = edge.ends
        if a != b and degree[a] >= 3 and degree[b] >= 3 and edge.length < length and find(a) != find(b):
            root[find(b)] = find(a)
        else:
            kept.append(edge)
    if len(kept) == len(edges):
        return edges
    members: dict[int, list[int]] = {}
    for node in range(len(positions)):
        members.setdefault(find(node), []).append(node)
    for group in members.values():
        if len(group) > 1:
            positions[group] = positions[group].mean(axis=0)
    merged = []
    for edge in kept:
        a, b = find(edge.ends[0]), find(edge.ends[1])
        points = edge.points.copy()
        points[0], points[-1] = positions[a], positions[b]
        merged.append(_Edge((a, b), points))
    return merged


def _heading(points: np.ndarray, reach: float) -> np.ndarray:
    """Unit direction leaving points[0] along the path, measured `reach` pixels out."""
    steps = np.hypot(*np.diff(points, axis=0).T)
    far = int(np.searchsorted(np.cumsum(steps), reach)) + 1
    direction = points[min(far, len(points) - 1)] - points[0]
    norm = np.hypot(*direction)
    return direction / norm if norm > 0 else direction


def join_strokes(edges: list[_Edge], reach: float, max_turn: float = 1.1) -> list[np.ndarray]:
    """Chain edges into strokes, going on through a node along the edge that turns least (at most
    `max_turn` radians); the other edges there start or end their own strokes."""
    ends_at: dict[int, list[tuple[int, int]]] = {}
    for e, edge in enumerate(edges):
        for side in (0, 1):
            ends_at.setdefault(edge.ends[side], []).append((e, side))
    partner: dict[tuple[int, int], tuple[int, int]] = {}
    limit = np.cos(max_turn)
    for incident in ends_at.values():
        if len(incident) < 2:
            continue
        heading = {
            (e, s): _heading(edges[e].points if s == 0 else edges[e].points[::-1], reach) for e, s in incident
        }
        pairs = []
        for i, first in enumerate(incident):
            for second in incident[i + 1 :]:
                straightness = -float(heading[first] @ heading[second])  # 1: straight through
                if straightness >= limit or len(incident) == 2:
                    pairs.append((straightness, first, second))
        for _, first, second in sorted(pairs, key=lambda p: -p[0]):
            if first not in partner and second not in partner and first[0] != second[0]:
                partner[first], partner[second] = second, first
            elif first[0] == second[0] and len(incident) == 2:  # a loop closing on itself
                partner[first], partner[second] = second, first

    used = np.zeros(len(edges), dtype=bool)
    strokes = []

    def chain(e: int, side: int) -> np.ndarray:
        """Walk from edge e entered at its end `side`, following partners until none is left."""
        pieces = []
        while not used[e]:
            used[e] = True
            points = edges[e].points if side == 0 else edges[e].points[::-1]
            pieces.append(points if not pieces else points[1:])
            nxt = partner.get((e, 1 - side))
            if nxt is None:
                break
            e, side = nxt
        return np.concatenate(pieces)

    for e in range(len(edges)):  # strokes that begin at a free end first
        for side in (0, 1):
            if not used[e] and (e, side) not in partner:
                strokes.append(chain(e, side))
    for e in range(len(edges)):  # what is left are closed chains
        if not used[e]:
            strokes.append(chain(e, 0))
    return strokes


# ---------------------------------------------------------------- from pixels to pen strokes
def smooth_stroke(points: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along the path (ends kept in place, loops smoothed round), then points
    about one pixel apart."""
    if len(points) < 3:
        return points
    closed = len(points) > 4 and np.hypot(*(points[0] - points[-1])) < 1.5
    if closed:
        smoothed = ndimage.gaussian_filter1d(points[:-1], sigma, axis=0, mode="wrap")
        smoothed = np.vstack([smoothed, smoothed[:1]])
    else:
        smoothed = ndimage.gaussian_filter1d(points, sigma, axis=0, mode="nearest")
        smoothed[0], smoothed[-1] = points[0], points[-1]
    steps = np.hypot(*np.diff(smoothed, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    if arc[-1] <= 0:
        return smoothed[:1]
    targets = np.linspace(0.0, arc[-1], max(2, int(np.ceil(arc[-1])) + 1))
    return np.stack([np.interp(targets, arc, smoothed[:, k]) for k in range(2)], axis=1)


def _writer_order(strokes: list[np.ndarray]) -> list[np.ndarray]:
    """Each stroke from its left end (top end when it is near vertical), loops from their top going
    anticlockwise on the page; strokes by their left edge."""
    directed = []
    for stroke in strokes:  # (x, y) with y down
        if len(stroke) > 4 and np.hypot(*(stroke[0] - stroke[-1])) < 1e-6:
            top = int(np.argmin(stroke[:-1, 1]))
            stroke = np.vstack([stroke[top:-1], stroke[: top + 1]])
            area = np.sum(stroke[:-1, 0] * stroke[1:, 1] - stroke[1:, 0] * stroke[:-1, 1])
            if area > 0:  # clockwise on the page (y down)
                stroke = stroke[::-1]
        else:
            dx, dy = stroke[-1] - stroke[0]
            if (abs(dx) >= 0.5 * abs(dy) and dx < 0) or (abs(dx) < 0.5 * abs(dy) and dy < 0):
                stroke = stroke[::-1]
        directed.append(stroke)
    return sorted(directed, key=lambda s: float(s[:, 0].min()))


@dataclass(frozen=True)
class Rendering:
    """A binary line image and where its baseline and x-height lie (pixels)."""

    mask: np.ndarray  # (height, width) bool, True = ink
    baseline: float
    x_height: float
    left: float


def render_line(text: str, font: OutlineFont, size: int) -> Rendering:
    """`text` in one piece (kerning and cursive joins as the font designs them), binarised."""
    face = load_face(font.path, size)
    ascent, descent = face.getmetrics()
    bbox = face.getbbox("x", anchor="ls")
    x_height = float(-bbox[1]) if bbox[1] < 0 else 0.5 * size
    margin = size // 2
    width = int(face.getlength(text)) + 2 * margin
    canvas = Image.new("L", (max(width, 4), ascent + descent + 2 * margin), 0)
    ImageDraw.Draw(canvas).text((margin, margin + ascent), text, font=face, fill=255, anchor="ls")
    return Rendering(np.asarray(canvas) >= 128, float(margin + ascent), x_height, float(margin))


def trace(rendering: Rendering, text: str = "") -> Ink:
    """Pen strokes along the skeleton of a rendering, in x-height units with the baseline at y = 0."""
    skeleton = thin(rendering.mask)
    if not skeleton.any():
        raise ValueError(f"nothing drawn for {text!r}")
    half_width = 0.5 * rendering.mask.sum() / skeleton.sum()  # ink area over skeleton length
    positions, edges = skeleton_graph(skeleton)
    edges = prune_spurs(positions, edges, length=max(2.0, 1.2 * half_width + 1.0))
    edges = merge_close_junctions(positions, edges, length=max(3.0, 2.5 * half_width))
    strokes = []
    for points in join_strokes(edges, reach=max(3.0, 2.0 * half_width)):
        xy = smooth_stroke(points[:, ::-1], sigma=max(1.0, 0.06 * rendering.x_height))
        if len(xy) == 1 or np.ptp(xy, axis=0).max() < 0.5:  # a dot: a tiny dab of the pen
            xy = np.vstack([xy[0] - [0.3, 0.0], xy[0] + [0.3, 0.0]])
        strokes.append(xy)
    origin = np.array([rendering.left, rendering.baseline])
    return Ink([(s - origin) / rendering.x_height for s in _writer_order(strokes)])


def skeleton_ink(text: str, font: OutlineFont, rng: np.random.Generator) -> Ink:
    """One line of `text` written along the skeleton of `font`, at a random size (x-height 18-28 px)."""
    probe = load_face(font.path, 40).getbbox("x", anchor="ls")
    ratio = -probe[1] / 40 if probe[1] < 0 else 0.5
    size = int(np.clip(rng.uniform(18, 28) / max(ratio, 0.2), 16, 140))
    return trace(render_line(text, font, size), text)
