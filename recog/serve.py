"""`recog serve`: a local web page and JSON API over loaded models: audio in, transcript with word
times out; pen strokes (drawn on the page) or a line image in, text with each character's strokes or
pixel columns out.

Standard library only (http.server). Models are loaded once; one lock serialises model inference.
Bound to 127.0.0.1 unless told otherwise; every request body, audio length and the number of uploads
in progress is bounded, and a bad upload is a 400 whose one-line JSON error names the upload.

API (the page uses it too): POST the raw bytes of one input, its name in the `X-Filename` header
(percent-encoded), to /api/speech (WAV, FLAC, OGG: anything libsndfile reads), /api/ink (an ink file:
JSON strokes as the page sends them, InkML or IAM-OnDB XML) or /api/image (PNG, JPEG, TIFF, BMP).
GET /api/models says which models are loaded and the limits.
"""

from __future__ import annotations

import io
import json
import re
import socket
import sys
import threading
import time
import traceback
import urllib.parse
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import numpy as np
import soundfile
import torch

from recog.audio import AudioError, read_audio
from recog.decode.transcript import Transcript
from recog.image import ImageError
from recog.ink import InkError
from recog.read import record_for

TASKS = ("speech", "ink", "image")
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
# The page loads nothing from elsewhere; recordings play from blob: URLs, drawings download as data:.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
LINGER_BYTES, LINGER_SECONDS = 64 * 1024 * 1024, 5.0  # what a refused upload may still send, discarded
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class ServeError(Exception):
    """The server cannot start (a model of the wrong kind, two models for one input kind)."""


class UploadError(Exception):
    """A request that cannot be served; `status` is its HTTP status."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. Audio: 50 MB is ~26 min of 16 kHz 16-bit WAV (the page sends
    that); an ink line is kilobytes of JSON; a scanned line image a few MB."""

    speech_bytes: int = 50 * 1024 * 1024
    ink_bytes: int = 4 * 1024 * 1024
    image_bytes: int = 20 * 1024 * 1024
    speech_seconds: float = 600.0  # decoded in one piece, so kept to minutes
    uploads: int = 4  # requests with a body in progress at once; more get 503
    read_timeout: float = 60.0  # seconds a client may take to send its request

    def bytes_for(self, task: str) -> int:
        return {"speech": self.speech_bytes, "ink": self.ink_bytes, "image": self.image_bytes}[task]


class Service:
    """The loaded recognizers (one per input kind) and the inference that the HTTP layer calls."""

    def __init__(self, recognizers: dict, decoder: str = "greedy", limits: Limits | None = None):
        self.recognizers, self.decoder, self.limits = recognizers, decoder, limits or Limits()
        self.lock = threading.Lock()  # one model call at a time: bounded memory, torch threads not split

    def info(self) -> dict:
        models = {
            task: {"checkpoint": Path(r.checkpoint).name if r.checkpoint else None, "model": r.model_id}
            for task, r in self.recognizers.items()
        }
        return {"models": models, "decoder": self.decoder, "limits": asdict(self.limits)}

    def recognize(self, task: str, data: bytes, name: str) -> dict:
        """One upload -> its result; AudioError/InkError/ImageError (naming `name`) when unusable."""
        recognizer = self.recognizers[task]
        if recognizer.modality.timed:
            return self._speech(recognizer, data, name)
        frames, places, facts = input_from_bytes(recognizer, data, name)
        log_probs, transcript = self._run(recognizer, frames)
        record = record_for(name, transcript, log_probs, recognizer, places, facts)
        return {"task": task, "name": record.pop("path"), **record}

    def _speech(self, recognizer, data: bytes, name: str) -> dict:
        rate = recognizer.features.config.sample_rate
        seconds = header_seconds(data)
        if seconds is not None and seconds > self.limits.speech_seconds:
            raise AudioError(f"{name}: {seconds:.0f} s of audio, more than {self.limits.speech_seconds:g} s")
        samples = read_audio(data, target_rate=rate, name=name)
        duration = len(samples) / rate
        if duration > self.limits.speech_seconds:
            raise AudioError(f"{name}: {duration:.0f} s of audio, more than {self.limits.speech_seconds:g} s")
        _, transcript = self._run(recognizer, recognizer.frames(samples))
        return {
            "task": "speech",
            "name": name,
            "text": transcript.text,
            "duration": round(duration, 3),
            "words": [asdict(word) for word in transcript.words],
        }

    def _run(self, recognizer, frames: torch.Tensor) -> tuple[torch.Tensor, Transcript]:
        with self.lock:
            (log_probs,) = recognizer.forward([frames])  # (time', vocab)
            if not log_probs.shape[0]:  # shorter than one output frame: nothing to read
                return log_probs, Transcript("")
            return log_probs, recognizer.decode([log_probs], self.decoder)[0]


def input_from_bytes(recognizer, data: bytes, name: str) -> tuple[torch.Tensor, np.ndarray, dict]:
    """`recog.read.load_input` for bytes: (frames, per frame its place in the input, facts)."""
    located = recognizer.modality.locate(data, name)
    return recognizer.cmvn(located.frames), located.places, located.facts


def header_seconds(data: bytes) -> float | None:
    """The length an audio header declares, before anything is decoded; None when there is no header
    soundfile understands (read_audio then says what is wrong)."""
    try:
        info = soundfile.info(io.BytesIO(data))
    except Exception:  # soundfile raises several types for unreadable bytes
        return None
    return info.frames / info.samplerate if info.samplerate > 0 else None


def load_service(
    model: str, ink_model: str | None = None, image_model: str | None = None, **options
) -> Service:
    """Recognizers from checkpoints: `model` of any kind, `ink_model`/`image_model` of that kind.
    `options`: device ("cpu", "cuda", ...), decoder ("greedy" | "beam"), limits."""
    from recog.recognizer import Recognizer

    device, decoder = options.pop("device", "cpu"), options.pop("decoder", "greedy")
    recognizers: dict = {}
    for path, wanted in ((model, None), (ink_model, "ink"), (image_model, "image")):
        if path is None:
            continue
        recognizer = Recognizer.load(path, device)
        if wanted and recognizer.task != wanted:
            raise ServeError(
                f"{path}: --{wanted}-model needs an {wanted} model, this is a {recognizer.task} model"
            )
        if recognizer.modality.name in recognizers:
            raise ServeError(f"{path}: a second {recognizer.task} model (one per input kind)")
        if decoder == "beam":
            recognizer.decoder("beam")  # the LM and lexicon loaded (and kernels compiled) before serving
        recognizers[recognizer.task] = recognizer
    return Service(recognizers, decoder, **options)


# ---------------------------------------------------------------- HTTP
class Handler(BaseHTTPRequestHandler):
    """Static page files and the JSON API; `server.service` holds the models."""

    server_version = "recog-serve"
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        self.timeout = self.server.service.limits.read_timeout  # a stalled client cannot hold a thread
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.body_pending = self.headers.get("Content-Length", "0").strip() not in ("", "0")
        if not self._host_allowed():
            return
        path = urllib.parse.urlsplit(self.path).path
        if path == "/api/models":
            self._json(HTTPStatus.OK, self.server.service.info())
        elif path in STATIC:
            name, kind = STATIC[path]
            body = resources.files("recog").joinpath("web", name).read_bytes()
            self._send(HTTPStatus.OK, body, kind)
        elif path.startswith("/api/"):
            self._json(
                HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{path}: use POST with the file as the body"}
            )
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"{path}: not found"})

    def do_POST(self) -> None:  # noqa: N802
        self.body_pending = True  # until read: an answer before that closes the connection
        if not self._host_allowed():
            return
        path = urllib.parse.urlsplit(self.path).path
        task = path.removeprefix("/api/")
        service = self.server.service
        if not path.startswith("/api/") or task not in TASKS:
            self._json(
                HTTPStatus.NOT_FOUND,
                {"error": f"{path}: not found (POST to /api/speech, /api/ink, /api/image)"},
            )
            return
        if not self.server.uploads.acquire(blocking=False):
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "busy: too many uploads at once, try again"})
            return
        try:
            name = upload_name(self.headers.get("X-Filename"), task)
            if task not in service.recognizers:
                raise UploadError(HTTPStatus.NOT_FOUND, f"no {task} model loaded (recog serve --help)")
            data = self._body(service.limits.bytes_for(task), name)
            self._json(HTTPStatus.OK, service.recognize(task, data, name))
        except UploadError as error:
            self._json(error.status, {"error": str(error)})
        except (AudioError, InkError, ImageError) as error:
            self._json(HTTPStatus.BAD_REQUEST, {"error": one_line(str(error))})
        except Exception as error:  # a bug or a library failing on odd input: say so, keep serving
            traceback.print_exc(file=sys.stderr)
            self._json(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": one_line(f"{type(error).__name__}: {error}")}
            )
        finally:
            self.server.uploads.release()

    def _body(self, limit: int, name: str) -> bytes:
        """The request body, refused before reading when it is larger than `limit` or of unknown size."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise UploadError(HTTPStatus.LENGTH_REQUIRED, f"{name}: send the file with a Content-Length")
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            raise UploadError(HTTPStatus.LENGTH_REQUIRED, f"{name}: Content-Length missing or not a number")
        size = int(length)
        if size > limit:  # refused unread
            raise UploadError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"{name}: {size} bytes is more than this server takes for one upload ({limit} bytes)",
            )
        data = self.rfile.read(size)
        self.body_pending = False
        if len(data) < size:
            self.close_connection = True
            raise UploadError(
                HTTPStatus.BAD_REQUEST, f"{name}: upload cut short ({len(data)} of {size} bytes)"
            )
        if not data:
            raise UploadError(HTTPStatus.BAD_REQUEST, f"{name}: empty upload")
        return data

    def _host_allowed(self) -> bool:
        """Served on a loopback address, only to pages of that address: a site that points its own name
        at 127.0.0.1 (DNS rebinding) or posts from elsewhere is refused."""
        if self.server.server_address[0] not in LOOPBACK:
            return True
        host = urllib.parse.urlsplit("//" + (self.headers.get("Host") or "")).hostname
        origin = self.headers.get("Origin")
        origin_host = urllib.parse.urlsplit(origin).hostname if origin else None
        if host in LOOPBACK and (origin is None or origin_host in LOOPBACK):
            return True
        self.close_connection = True
        self._json(HTTPStatus.FORBIDDEN, {"error": "only pages served from this machine's loopback address"})
        return False

    def _json(self, status: HTTPStatus, value: dict) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in SECURITY_HEADERS.items():
            self.send_header(key, value)
        if self.body_pending:
            self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        if self.body_pending:
            self._linger()

    def _linger(self) -> None:
        """After answering a request whose body was not read: let the client finish sending (discarded;
        at most LINGER_BYTES within LINGER_SECONDS), so that it reads the answer, not a reset connection."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(1.0)
            deadline, left = time.monotonic() + LINGER_SECONDS, LINGER_BYTES
            while left > 0 and time.monotonic() < deadline:
                chunk = self.connection.recv(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        if self.server.verbose:
            super().log_message(format, *args)


def upload_name(header: str | None, task: str) -> str:
    """The name an error line gives the upload: the client's file name (percent-decoded, control
    characters dropped, at most 200 characters), else 'upload (<kind>)'."""
    name = urllib.parse.unquote(header or "").strip()
    name = re.sub(r"[\x00-\x1f\x7f]", "", Path(name.replace("\\", "/")).name)[:200]
    return name or f"upload ({task})"


def one_line(text: str) -> str:
    return " ".join(text.split())


class Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def make_server(service: Service, host: str = "127.0.0.1", port: int = 8000, verbose: bool = False):
    """A ThreadingHTTPServer bound to (host, port) (port 0: a free one), not yet serving."""
    server = (Server6 if ":" in host else ThreadingHTTPServer)((host, port), Handler)
    server.service, server.verbose = service, verbose
    server.uploads = threading.BoundedSemaphore(service.limits.uploads)
    return server


def serve(service: Service, host: str = "127.0.0.1", port: int = 8000, verbose: bool = True) -> None:
    """Serve until interrupted, after one line with the URL on stdout."""
    server = make_server(service, host, port, verbose)
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    models = ", ".join(f"{task}: {info['checkpoint']}" for task, info in service.info()["models"].items())
    print(f"recog serve: http://{shown}:{bound_port}/ ({models}; Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
