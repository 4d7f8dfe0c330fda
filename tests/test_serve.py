"""`recog serve`: the JSON API (speech, ink, images) against direct Recognizer calls with tiny trained
models, bad and oversized uploads, host and origin checks, the command line; and the page itself in
headless Chromium: strokes drawn with the mouse are read live and coloured per character, a line
image and an audio file uploaded, each showing exactly what the recognizer returns for that input."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import REPO, run_recog, subprocess_env, synthesize
from test_handwriting_train import trained_run
from test_read import corpus_members

from recog.audio import read_audio
from recog.decode.transcript import Transcript
from recog.image import read_image
from recog.ink import decode_ink
from recog.read import load_input, record_for
from recog.recognizer import Recognizer
from recog.serve import Limits, Service, load_service, make_server

SPEECH_TINY = "configs/speech-tiny.yaml"


# ---------------------------------------------------------------- models and a running server
@pytest.fixture(scope="module")
def checkpoints(tiny_corpus, tmp_path_factory) -> dict[str, Path]:
    """Tiny trained speech, ink and image checkpoints (the handwriting ones shared with test_read)."""
    speech = tmp_path_factory.getbasetemp() / "serve-speech-run"
    if not (speech / "best.pt").exists():
        settings = ["train.max_epochs=1", "train.eval_every=0", "train.threads=1", f"data.root={tiny_corpus}"]
        run_recog("train", SPEECH_TINY, "--out", str(speech), *[a for s in settings for a in ("--set", s)])
    ink, image = trained_run(tmp_path_factory, "ink"), trained_run(tmp_path_factory, "image")
    return {
        "speech": speech / "best.pt",
        "ink": ink["out"] / "best.pt",
        "image": image["out"] / "best.pt",
        "corpus": ink["corpus"],
    }


def running(service: Service):
    server = make_server(service, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def server(checkpoints):
    service = load_service(str(checkpoints["speech"]), str(checkpoints["ink"]), str(checkpoints["image"]))
    httpd = running(service)
    yield {
        "url": f"http://127.0.0.1:{httpd.server_address[1]}",
        "service": service,
        "port": httpd.server_address[1],
    }
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def inputs(checkpoints, tmp_path_factory) -> dict[str, Path]:
    """A spoken sentence (WAV and FLAC), an ink line (JSON, as the page writes it) and a line image."""
    folder = tmp_path_factory.mktemp("serve-inputs")
    wav = synthesize("the cat sat on the mat", folder / "sentence.wav")
    samples, rate = soundfile.read(wav, dtype="int16")
    soundfile.write(folder / "sentence.flac", samples, rate)
    ink = decode_ink(corpus_members(checkpoints["corpus"], "train.jsonl", "ink.npz", 1)[0])
    (folder / "line.json").write_text(json.dumps({"strokes": [s.tolist() for s in ink.strokes]}))
    # The 3-epoch image model leaves most lines blank: take the first training line it reads something in.
    pngs = corpus_members(checkpoints["corpus"], "train-images.jsonl", "png", 12)
    recognizer = Recognizer.load(checkpoints["image"])
    texts = [t.text for t in recognizer.decode(recognizer.log_probs([read_image(png) for png in pngs]))]
    (folder / "line.png").write_bytes(next((p for p, t in zip(pngs, texts, strict=True) if t), pngs[0]))
    return {
        "wav": wav,
        "flac": folder / "sentence.flac",
        "ink": folder / "line.json",
        "png": folder / "line.png",
    }


def post(port: int, path: str, body: bytes, headers: dict | None = None, length: int | None = None):
    """(status, JSON answer) of a POST; `length` declares another Content-Length than the body's."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.putrequest("POST", path)
        for key, value in {
            "Content-Length": str(len(body) if length is None else length),
            **(headers or {}),
        }.items():
            if value is not None:
                connection.putheader(key, value)
        connection.endheaders()
        if body:
            connection.send(body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


# ---------------------------------------------------------------- what the recognizer says directly
def direct_speech(path: Path, checkpoint: Path) -> Transcript:
    recognizer = Recognizer.load(checkpoint)
    samples = read_audio(path, recognizer.features.config.sample_rate)
    return recognizer.decode(recognizer.log_probs([samples]))[0]


def direct_read(path: Path, checkpoint: Path) -> dict:
    """The record `recog read` computes for a file (its functions, not the server's)."""
    recognizer = Recognizer.load(checkpoint)
    frames, places, facts = load_input(recognizer, str(path))
    (log_probs,) = recognizer.forward([frames])
    transcript = recognizer.decode([log_probs])[0] if len(log_probs) else Transcript("")
    return record_for(str(path), transcript, log_probs, recognizer, places, facts)


# ---------------------------------------------------------------- the API
def test_speech_api_returns_the_recognizers_transcript_with_word_times(server, checkpoints, inputs):
    expected = direct_speech(inputs["wav"], checkpoints["speech"])
    assert expected.words, "the tiny model writes something for this sentence"
    for name in ("wav", "flac"):  # the same 16-bit samples in both
        status, answer = post(
            server["port"], "/api/speech", inputs[name].read_bytes(), {"X-Filename": f"s.{name}"}
        )
        assert status == 200, answer
        assert answer["text"] == expected.text and answer["name"] == f"s.{name}"
        assert answer["words"] == [asdict(word) for word in expected.words]
        assert answer["duration"] == pytest.approx(len(read_audio(inputs["wav"])) / 16000, abs=1e-3)


@pytest.mark.parametrize("kind", ["ink", "png"])
def test_ink_and_image_apis_return_what_recog_read_computes(server, checkpoints, inputs, kind):
    task = "ink" if kind == "ink" else "image"
    expected = direct_read(inputs[kind], checkpoints[task])
    status, answer = post(
        server["port"],
        f"/api/{task}",
        inputs[kind].read_bytes(),
        {"X-Filename": urllib.parse.quote("my line")},
    )
    assert status == 200, answer
    assert answer.pop("name") == "my line" and answer.pop("task") == task and expected.pop("path")
    assert answer == expected
    placed = [c for c in answer["chars"] if c["start"] is not None]
    if task == "ink":  # the characters cover the points, in order, without gaps
        assert placed, "the tiny model reads something in a training line"
        assert placed[0]["start"] == 0 and placed[-1]["end"] == answer["points"]
        assert all(a["end"] == b["start"] for a, b in zip(placed, placed[1:], strict=False))


def test_bad_uploads_are_400s_naming_the_upload_and_oversized_ones_413_unread(server, inputs):
    port = server["port"]
    cases = [
        ("/api/speech", b"not audio at all", "notes.wav", "notes.wav: not a readable audio file"),
        ("/api/ink", b'{"strokes": [[[1, 2], [3]]]}', "pen.json", "pen.json: stroke 1 is not a list"),
        ("/api/ink", b"{broken", "pen.json", "pen.json: malformed JSON"),
        ("/api/image", b"\x89PNG\r\n\x1a\n broken", "scan.png", "scan.png: not an image"),
        ("/api/image", b"", "scan.png", "scan.png: empty upload"),
    ]
    for path, body, name, start in cases:
        status, answer = post(port, path, body, {"X-Filename": name})
        assert status == 400 and answer["error"].startswith(start), (path, name, answer)
        assert "\n" not in answer["error"]
    # 4 GB declared, nothing sent: refused from the header alone (a server that read it would hang here)
    status, answer = post(port, "/api/speech", b"", {"X-Filename": "huge.wav"}, length=4 * 1024**3)
    assert status == 413 and answer["error"].startswith("huge.wav: 4294967296 bytes is more than")
    status, answer = post(port, "/api/ink", b"x" * (Limits().ink_bytes + 1), {"X-Filename": "big.json"})
    assert status == 413 and "big.json" in answer["error"]
    assert post(port, "/api/ink", b"", {"Content-Length": None})[0] == 411
    assert post(port, "/api/nothing", b"{}")[0] == 404
    assert get(port, "/api/ink")[0] == 405 and get(port, "/secret")[0] == 404


def test_limits_models_hosts_and_origins(server, checkpoints, inputs):
    recognizers = server["service"].recognizers
    short = running(Service({"speech": recognizers["speech"]}, limits=Limits(speech_seconds=1.0)))
    port = short.server_address[1]
    try:
        status, answer = post(port, "/api/speech", inputs["flac"].read_bytes(), {"X-Filename": "long.flac"})
        assert status == 400 and re.fullmatch(r"long\.flac: \d+ s of audio, more than 1 s", answer["error"])
        status, answer = post(port, "/api/ink", b"{}", {"X-Filename": "a.json"})
        assert status == 404 and answer["error"] == "no ink model loaded (recog serve --help)"
        assert json.loads(get(port, "/api/models")[1])["models"].keys() == {"speech"}
    finally:
        short.shutdown()
        short.server_close()
    port = server["port"]
    assert get(port, "/", {"Host": "evil.example:80"})[0] == 403  # DNS rebinding
    status, answer = post(port, "/api/ink", b"{}", {"Origin": "http://evil.example"})
    assert status == 403 and "loopback" in answer["error"]
    status, page, headers = get(port, "/", {"Host": "localhost"})
    assert status == 200 and b"<canvas" in page and "default-src 'self'" in headers["Content-Security-Policy"]
    assert all(re.search(r"(src|href)=\"(https?:)?//", line) is None for line in page.decode().splitlines())


def test_command_line_prints_the_url_serves_the_page_and_refuses_a_wrong_model(checkpoints):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recog.cli",
            "serve",
            "--model",
            str(checkpoints["ink"]),
            "--port",
            "0",
            "--quiet",
        ],
        cwd=REPO,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        found = re.match(r"recog serve: http://127\.0\.0\.1:(\d+)/ \(ink: best\.pt; Ctrl-C to stop\)$", line)
        assert found, line + process.stderr.read() if process.poll() is not None else line
        port = int(found.group(1))
        assert get(port, "/")[0] == 200 and b"recog" in get(port, "/app.js")[1]
        assert json.loads(get(port, "/api/models")[1])["models"]["ink"]["checkpoint"] == "best.pt"
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stdout.close(), process.stderr.close()
    result = run_recog(
        "serve", "--model", str(checkpoints["ink"]), "--ink-model", str(checkpoints["image"]), check=False
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"recog: serve: {checkpoints['image']}: --ink-model needs an ink model, this is a image model\n"
    )


# ---------------------------------------------------------------- the page in headless Chromium
def chromium_driver():
    """A headless Chromium WebDriver, or a skip naming what is missing."""
    missing = [
        name
        for name, tool in (("chromium", "chromium"), ("chromium-driver", "chromedriver"))
        if not shutil.which(tool)
    ]
    if missing:
        pytest.skip(f"Debian package {' and '.join(missing)} not installed (make setup installs it)")
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="pip package selenium not installed (make setup)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,1400",
    ):
        options.add_argument(argument)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    return webdriver.Chrome(options=options, service=service)


def page_chars(driver, element_id: str) -> list[tuple]:
    return driver.execute_script(
        "return [...document.getElementById(arguments[0]).children].map(s => "
        "[s.textContent, s.dataset.start === undefined ? null : +s.dataset.start, "
        "s.dataset.end === undefined ? null : +s.dataset.end, s.dataset.colour || null]);",
        element_id,
    )


def record_chars(record: dict) -> list[tuple]:
    return [[c["char"], c["start"], c["end"]] for c in record["chars"]]


CANVAS_COLOURS = """
const canvas = document.getElementById('ink-canvas');
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
const counts = {};
for (let i = 0; i < data.length; i += 4) {
  if (data[i + 3] !== 255) continue;
  const key = '#' + [data[i], data[i + 1], data[i + 2]].map(v => v.toString(16).padStart(2, '0')).join('');
  counts[key] = (counts[key] || 0) + 1;
}
return counts;
"""


def test_the_page_in_headless_chromium(server, checkpoints, inputs, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium_driver()
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(server["url"] + "/")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")

        # Write the corpus line with the mouse, stroke by stroke, scaled onto the canvas.
        strokes = json.loads(inputs["ink"].read_text())["strokes"]
        points = np.concatenate([np.asarray(s, dtype=float) for s in strokes])
        low, high = points.min(axis=0), points.max(axis=0)
        canvas = driver.find_element(By.ID, "ink-canvas")
        size = canvas.size
        scale = min(
            (size["width"] - 40) / max(high[0] - low[0], 1), (size["height"] - 40) / max(high[1] - low[1], 1)
        )
        actions = ActionChains(driver, duration=0)
        step = max(1, len(points) // 200)  # each pointer move waits for a frame: some 200 moves in all
        for stroke in strokes:
            path = [
                (
                    (x - low[0]) * scale + 20 - size["width"] / 2,
                    (y - low[1]) * scale + 20 - size["height"] / 2,
                )
                for x, y in stroke
            ]
            path = path[::step] + ([path[-1]] if (len(path) - 1) % step else [])
            actions.move_to_element_with_offset(canvas, int(path[0][0]), int(path[0][1])).click_and_hold()
            for x, y in path[1:]:
                actions.move_to_element_with_offset(canvas, int(x), int(y))
            actions.release()
        actions.perform()
        ink = driver.find_element(By.ID, "ink")
        wait.until(
            lambda d: (
                ink.get_attribute("data-state") == "done"
                and ink.get_attribute("data-strokes") == str(len(strokes))
            )
        )

        # What the page sent is what its "Save ink" link holds: read it directly and compare.
        href = driver.find_element(By.ID, "ink-download").get_attribute("href")
        drawn = tmp_path / "drawing.json"
        drawn.write_text(urllib.parse.unquote(href.removeprefix("data:application/json,")))
        assert len(json.loads(drawn.read_text())["strokes"]) == len(strokes)
        expected = direct_read(drawn, checkpoints["ink"])
        shown = page_chars(driver, "ink-text")
        assert expected["text"], "the tiny model reads something in the drawn line"
        assert driver.find_element(By.ID, "ink-text").get_attribute("data-text") == expected["text"]
        assert [row[:3] for row in shown] == record_chars(expected)
        colours = driver.execute_script(CANVAS_COLOURS)
        for char, start, _, colour in shown:
            if start is not None and char != " ":
                assert colours.get(colour, 0) > 0, (char, colour, colours)  # its strokes drawn in its colour
        assert colours.get("#000000", 0) == 0, "every point belongs to a character"

        # A line image through the file input.
        driver.find_element(By.ID, "image-file").send_keys(str(inputs["png"]))
        wait.until(lambda d: d.find_element(By.ID, "image").get_attribute("data-state") in ("done", "error"))
        assert driver.find_element(By.ID, "image-status").get_attribute("class") == "status"
        expected = direct_read(inputs["png"], checkpoints["image"])
        assert [row[:3] for row in page_chars(driver, "image-text")] == record_chars(expected)
        assert driver.find_element(By.ID, "image-canvas").is_displayed()

        # An audio file: the transcript and one table row per word with its times.
        driver.find_element(By.ID, "speech-file").send_keys(str(inputs["wav"]))
        speech = driver.find_element(By.ID, "speech")
        wait.until(lambda d: speech.get_attribute("data-state") in ("done", "error"))
        expected = direct_speech(inputs["wav"], checkpoints["speech"])
        assert driver.find_element(By.ID, "speech-text").text == expected.text
        rows = driver.execute_script(
            "return [...document.querySelectorAll('#speech-words tbody tr')].map(r => "
            "[r.cells[0].textContent, +r.dataset.start, +r.dataset.end]);"
        )
        assert rows == [[w.word, w.start, w.end] for w in expected.words] and rows

        # Another format goes through the browser's decoder and is sent as 16 kHz WAV.
        other = tmp_path / "sentence.m4a"
        shutil.copy(inputs["wav"], other)
        driver.execute_script("document.getElementById('speech').dataset.state = 'idle';")
        driver.find_element(By.ID, "speech-file").send_keys(str(other))
        wait.until(lambda d: speech.get_attribute("data-state") in ("done", "error"))
        status = driver.find_element(By.ID, "speech-status").text
        found = re.match(r"sentence\.wav: (\d+\.\d\d) s, \d+ words$", status)
        assert found and float(found.group(1)) == pytest.approx(
            len(read_audio(inputs["wav"])) / 16000, abs=0.02
        )

        # A bad upload: the error names the file, on the page.
        bad = tmp_path / "notes.wav"
        bad.write_text("not audio at all")
        driver.find_element(By.ID, "speech-file").send_keys(str(bad))
        wait.until(lambda d: speech.get_attribute("data-state") == "error")
        assert driver.find_element(By.ID, "speech-status").text.startswith(
            "notes.wav: not a readable audio file"
        )
    finally:
        driver.quit()
