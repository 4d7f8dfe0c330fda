// recog serve: the page. Speech (upload or record), ink drawn on a canvas and read live, line images.
// Everything goes to this page's own /api/* endpoints; nothing is loaded from anywhere else.
"use strict";

const PALETTE = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
  "#17becf", "#bcbd22", "#7f7f7f"];
const SPACE_COLOUR = "#c8c8c8";
const SEND_AS_IS = [".wav", ".flac", ".ogg", ".oga", ".mp3"]; // what the server's libsndfile reads
const RATE = 16000; // recordings and other formats are sent as 16 kHz 16-bit mono WAV
let limits = null;

const $ = (id) => document.getElementById(id);

function colourOf(index, char) {
  return char === " " ? SPACE_COLOUR : PALETTE[index % PALETTE.length];
}

function setStatus(task, text, state) {
  const element = $(`${task}-status`);
  element.textContent = text;
  element.classList.toggle("error", state === "error");
  $(task).dataset.state = state;
}

async function recognize(task, body, name) {
  const response = await fetch(`/api/${task}`, {
    method: "POST",
    headers: {"Content-Type": "application/octet-stream", "X-Filename": encodeURIComponent(name)},
    body,
  });
  let result;
  try {
    result = await response.json();
  } catch (error) {
    throw new Error(`${name}: the server answered ${response.status} without JSON`);
  }
  if (!response.ok) throw new Error(result.error || `${name}: HTTP ${response.status}`);
  return result;
}

function checkSize(task, size, name) {
  const limit = limits && limits[`${task}_bytes`];
  if (limit && size > limit) {
    throw new Error(`${name}: ${size} bytes is more than this server takes for one upload (${limit} bytes)`);
  }
}

// Text with one span per character, coloured as its strokes or columns are; spans carry the range.
function showChars(element, result) {
  element.replaceChildren();
  result.chars.forEach((char, index) => {
    const span = document.createElement("span");
    span.className = "char";
    span.textContent = char.char;
    span.dataset.index = index;
    if (char.start === null) {
      span.classList.add("unplaced");
      span.title = "no position";
    } else {
      span.dataset.start = char.start;
      span.dataset.end = char.end;
      span.dataset.colour = colourOf(index, char.char);
      span.style.color = span.dataset.colour;
      span.title = `${char.start}–${char.end}, confidence ${char.confidence}`;
    }
    element.appendChild(span);
  });
  element.dataset.text = result.text;
}

function setupDrop(zoneId, inputId, handle) {
  const zone = $(zoneId);
  const input = $(inputId);
  input.addEventListener("change", () => {
    if (input.files.length) handle(input.files[0]);
    input.value = "";
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) handle(event.dataTransfer.files[0]);
  });
}

// ------------------------------------------------------------------ speech
async function toWav(blob) {
  // Any format the browser decodes (webm/opus recordings, m4a) -> 16 kHz mono 16-bit WAV bytes.
  const context = new AudioContext();
  let decoded;
  try {
    decoded = await context.decodeAudioData(await blob.arrayBuffer());
  } finally {
    context.close();
  }
  const frames = Math.max(1, Math.ceil(decoded.duration * RATE));
  const offline = new OfflineAudioContext(1, frames, RATE);
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination);
  source.start();
  const samples = (await offline.startRendering()).getChannelData(0);
  const bytes = new DataView(new ArrayBuffer(44 + 2 * samples.length));
  const text = (offset, value) => [...value].forEach((c, i) => bytes.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  bytes.setUint32(4, 36 + 2 * samples.length, true);
  text(8, "WAVEfmt ");
  bytes.setUint32(16, 16, true);
  bytes.setUint16(20, 1, true); // PCM
  bytes.setUint16(22, 1, true); // mono
  bytes.setUint32(24, RATE, true);
  bytes.setUint32(28, 2 * RATE, true);
  bytes.setUint16(32, 2, true);
  bytes.setUint16(34, 16, true);
  text(36, "data");
  bytes.setUint32(40, 2 * samples.length, true);
  samples.forEach((value, i) => bytes.setInt16(44 + 2 * i, Math.max(-1, Math.min(1, value)) * 32767, true));
  return new Blob([bytes.buffer], {type: "audio/wav"});
}

async function transcribe(blob, name) {
  const player = $("player");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(blob);
  player.hidden = false;
  $("speech-text").textContent = "";
  $("speech-words").hidden = true;
  setStatus("speech", `transcribing ${name}…`, "busy");
  try {
    const suffix = name.includes(".") ? name.slice(name.lastIndexOf(".")).toLowerCase() : "";
    let body = blob;
    if (!SEND_AS_IS.includes(suffix)) {
      body = await toWav(blob);
      name = name.replace(/\.[^.]*$/, "") + ".wav";
    }
    checkSize("speech", body.size, name);
    showTranscript(await recognize("speech", body, name));
  } catch (error) {
    setStatus("speech", error.message, "error");
  }
}

function showTranscript(result) {
  $("speech-text").textContent = result.text;
  const rows = $("speech-words").querySelector("tbody");
  rows.replaceChildren();
  for (const word of result.words) {
    const row = document.createElement("tr");
    row.className = "word";
    for (const value of [word.word, word.start.toFixed(2), word.end.toFixed(2), word.confidence.toFixed(2)]) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.appendChild(cell);
    }
    row.dataset.start = word.start;
    row.dataset.end = word.end;
    row.addEventListener("click", () => {
      $("player").currentTime = word.start;
      $("player").play();
    });
    rows.appendChild(row);
  }
  $("speech-words").hidden = result.words.length === 0;
  setStatus("speech", `${result.name}: ${result.duration.toFixed(2)} s, ${result.words.length} words`, "done");
}

let recorder = null;

async function toggleRecording() {
  const button = $("record");
  if (recorder) {
    recorder.stop();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({audio: true});
  } catch (error) {
    setStatus("speech", `cannot record: ${error.message}`, "error");
    return;
  }
  const pieces = [];
  recorder = new MediaRecorder(stream);
  recorder.addEventListener("dataavailable", (event) => pieces.push(event.data));
  recorder.addEventListener("stop", () => {
    stream.getTracks().forEach((track) => track.stop());
    clearTimeout(recorder.limit);
    recorder = null;
    button.textContent = "Record";
    button.classList.remove("recording");
    $("record-status").textContent = "";
    transcribe(new Blob(pieces, {type: pieces[0] ? pieces[0].type : "audio/webm"}), "recording.webm");
  });
  const seconds = limits ? limits.speech_seconds : 600;
  recorder.limit = setTimeout(() => recorder && recorder.stop(), seconds * 1000);
  recorder.start();
  button.textContent = "Stop";
  button.classList.add("recording");
  $("record-status").textContent = `recording (at most ${seconds} s)…`;
}

// ------------------------------------------------------------------ ink
const ink = {strokes: [], drawing: null, t0: null, sent: 0, shown: null, timer: null};

function canvasPoint(canvas, event) {
  const box = canvas.getBoundingClientRect();
  const x = ((event.clientX - box.left) * canvas.width) / box.width;
  const y = ((event.clientY - box.top) * canvas.height) / box.height;
  if (ink.t0 === null) ink.t0 = event.timeStamp;
  return [Math.round(x * 10) / 10, Math.round(y * 10) / 10, Math.round(event.timeStamp - ink.t0) / 1000];
}

function inkJSON() {
  return JSON.stringify({strokes: ink.strokes});
}

function drawInk() {
  // Each segment in the colour of the character its first point belongs to; black until read.
  const canvas = $("ink-canvas");
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.lineWidth = 3;
  context.lineCap = "round";
  context.lineJoin = "round";
  const colours = ink.shown && ink.shown.strokes === ink.strokes.length ? ink.shown.colours : null;
  let index = 0;
  for (const stroke of [...ink.strokes, ...(ink.drawing ? [ink.drawing] : [])]) {
    for (let i = 0; i < stroke.length; i++, index++) {
      const [x, y] = stroke[i];
      const colour = (colours && colours[index]) || "#000";
      const [px, py] = i > 0 ? stroke[i - 1] : [x - 0.01, y];
      context.strokeStyle = colour;
      context.beginPath();
      context.moveTo(px, py);
      context.lineTo(x, y);
      context.stroke();
    }
  }
}

function pointColours(result) {
  const colours = new Array(result.points).fill(null);
  result.chars.forEach((char, index) => {
    if (char.start === null) return;
    for (let point = char.start; point < char.end; point++) colours[point] = colourOf(index, char.char);
  });
  return colours;
}

async function readInk() {
  const download = $("ink-download");
  if (!ink.strokes.length) {
    ink.shown = null;
    $("ink-text").replaceChildren();
    download.hidden = true;
    setStatus("ink", "", "idle");
    drawInk();
    return;
  }
  const json = inkJSON();
  download.href = "data:application/json," + encodeURIComponent(json);
  download.hidden = false;
  const strokes = ink.strokes.length;
  const request = ++ink.sent;
  setStatus("ink", "reading…", "busy");
  try {
    checkSize("ink", json.length, "drawing");
    const result = await recognize("ink", json, "drawing");
    if (request !== ink.sent) return; // a newer drawing is on its way
    ink.shown = {strokes, colours: pointColours(result)};
    showChars($("ink-text"), result);
    $("ink").dataset.strokes = strokes;
    setStatus("ink", `${result.points} points, ${strokes} strokes, confidence ${result.confidence}`, "done");
  } catch (error) {
    if (request === ink.sent) setStatus("ink", error.message, "error");
  }
  drawInk();
}

function setupInk() {
  const canvas = $("ink-canvas");
  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    canvas.setPointerCapture(event.pointerId);
    clearTimeout(ink.timer);
    ink.drawing = [canvasPoint(canvas, event)];
    drawInk();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!ink.drawing) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const each of events.length ? events : [event]) ink.drawing.push(canvasPoint(canvas, each));
    drawInk();
  });
  const finish = () => {
    if (!ink.drawing) return;
    ink.strokes.push(ink.drawing);
    ink.drawing = null;
    drawInk();
    clearTimeout(ink.timer);
    ink.timer = setTimeout(readInk, 250); // read once the pen has rested a moment
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  $("ink-undo").addEventListener("click", () => {
    ink.strokes.pop();
    readInk();
  });
  $("ink-clear").addEventListener("click", () => {
    ink.strokes = [];
    ink.t0 = null;
    readInk();
  });
}

// ------------------------------------------------------------------ line images
async function readImage(file) {
  const canvas = $("image-canvas");
  const context = canvas.getContext("2d");
  $("image-text").replaceChildren();
  let bitmap = null;
  try {
    bitmap = await createImageBitmap(file);
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    context.drawImage(bitmap, 0, 0);
    canvas.hidden = false;
  } catch (error) {
    canvas.hidden = true; // e.g. TIFF: the server reads it, the browser cannot show it
  }
  setStatus("image", `reading ${file.name}…`, "busy");
  try {
    checkSize("image", file.size, file.name);
    const result = await recognize("image", file, file.name);
    showChars($("image-text"), result);
    if (bitmap) {
      result.chars.forEach((char, index) => {
        if (char.start === null || char.char === " ") return;
        context.globalAlpha = 0.25;
        context.fillStyle = colourOf(index, char.char);
        context.fillRect(char.start, 0, char.end - char.start, canvas.height);
        context.globalAlpha = 1;
        context.fillRect(char.start, canvas.height - 4, char.end - char.start, 4);
      });
    }
    setStatus("image", `${result.name}: ${result.width}×${result.height} px, confidence ${result.confidence}`, "done");
  } catch (error) {
    setStatus("image", error.message, "error");
  }
}

// ------------------------------------------------------------------ start
async function start() {
  setupDrop("speech-drop", "speech-file", (file) => transcribe(file, file.name));
  setupDrop("image-drop", "image-file", readImage);
  $("record").addEventListener("click", toggleRecording);
  if (!window.MediaRecorder) $("record").disabled = true;
  setupInk();
  try {
    const info = await (await fetch("/api/models")).json();
    limits = info.limits;
    for (const task of ["speech", "ink", "image"]) {
      const loaded = task in info.models;
      $(task).classList.toggle("disabled", !loaded);
      $(task).querySelector(".missing").hidden = loaded;
    }
    $("models").textContent = Object.entries(info.models)
      .map(([task, model]) => `${task}: ${model.checkpoint}`)
      .join(" · ") + ` · ${info.decoder} decoding`;
    document.body.dataset.ready = "true";
  } catch (error) {
    $("models").textContent = `cannot reach the server: ${error.message}`;
  }
}

start();
