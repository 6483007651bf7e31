// mididdsp editor: the page over the JSON API (docs/editor.md). Plain JavaScript, no library, no network beyond
// this server. State lives on the server; the page keeps a copy of the session (tracks, notes) and the selection.
"use strict";

const editor = {
  session: null,        // GET /api/session
  notesById: new Map(), // id -> note
  selected: new Set(),  // ids of the selected notes
  colourBy: "volume",
  audioUrl: null,       // object URL of the last rendered WAV
  audioVersion: 0,      // increases with every render (tests wait on it)
  busy: 0,              // requests in flight
};
window.editor = editor;

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------------------------------------ talking to the API
async function api(method, path, body, raw) {
  editor.busy += 1;
  try {
    const options = { method, headers: {} };
    if (body !== undefined) {
      options.body = raw ? body : JSON.stringify(body);
      options.headers["Content-Type"] = raw ? "text/csv" : "application/json";
    }
    const response = await fetch(path, options);
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try { message = (await response.json()).error || message; } catch (ignored) { /* not JSON */ }
      throw new Error(message);
    }
    return response;
  } finally {
    editor.busy -= 1;
  }
}

function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
  setStatus("error");
}

function clearError() { $("error").hidden = true; }

function setStatus(text) { $("status").textContent = text; }

// Run an action; any failure is shown in the page (never a silent failure).
async function guarded(action) {
  try {
    await action();
  } catch (error) {
    showError(error.message || String(error));
  }
}

async function loadSession() {
  editor.session = await (await api("GET", "/api/session")).json();
  editor.notesById = new Map(editor.session.notes.map((note) => [note.id, note]));
  for (const id of [...editor.selected]) if (!editor.notesById.has(id)) editor.selected.delete(id);
  $("file-name").textContent = editor.session.file;
  $("undo").disabled = !editor.session.can_undo;
  $("redo").disabled = !editor.session.can_redo;
  drawTracks();
  drawRoll();
  updateSliders();
  await drawCurves();
}

function mergeNotes(notes) {
  for (const note of notes) {
    const index = editor.session.notes.findIndex((other) => other.id === note.id);
    editor.session.notes[index] = note;
    editor.notesById.set(note.id, note);
  }
}

// Render (the whole piece, or from start to end seconds) and load it into the player.
async function render(span) {
  setStatus("rendering…");
  const started = performance.now();
  const response = await api("POST", "/api/render", span || {});
  const blob = await response.blob();
  if (editor.audioUrl) URL.revokeObjectURL(editor.audioUrl);
  editor.audioUrl = URL.createObjectURL(blob);
  $("player").src = editor.audioUrl;
  editor.audioVersion += 1;
  const messages = JSON.parse(response.headers.get("X-Render-Messages") || "[]");
  setStatus(`rendered in ${Math.round(performance.now() - started)} ms` + (messages.length ? ` (${messages.join("; ")})` : ""));
}

async function play(span) {
  await render(span);
  try { await $("player").play(); } catch (ignored) { /* autoplay refused: the player's button still works */ }
}

// After any change of state: fresh session copy, fresh audio of the whole piece.
async function afterChange() {
  await loadSession();
  await render();
}

// ------------------------------------------------------------------------------------------------ tracks
function drawTracks() {
  const body = $("tracks").querySelector("tbody");
  body.replaceChildren();
  for (const track of editor.session.tracks) {
    const row = document.createElement("tr");
    const cells = [String(track.index), track.name, `${track.program} ${track.program_name}`];
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    const instrumentCell = document.createElement("td");
    const selectCell = document.createElement("td");
    if (track.instrument) {
      const select = document.createElement("select");
      select.dataset.track = track.index;
      for (const name of editor.session.instruments) select.add(new Option(name, name, false, name === track.instrument));
      select.addEventListener("change", () => guarded(async () => {
        await api("PATCH", "/api/tracks", { edits: [{ index: track.index, instrument: select.value }] });
        await afterChange();
      }));
      instrumentCell.append(select);
      const button = document.createElement("button");
      button.textContent = "select";
      button.title = "select every note of this track";
      button.addEventListener("click", () => {
        editor.selected = new Set(editor.session.notes.filter((n) => n.track === track.index).map((n) => n.id));
        selectionChanged();
      });
      selectCell.append(button);
    } else {
      instrumentCell.textContent = track.is_drum ? "drums (skipped)" : "(empty)";
    }
    row.append(instrumentCell, selectCell);
    body.append(row);
  }
}

// ------------------------------------------------------------------------------------------------ piano roll
const ROLL_MARGIN = 36; // pixels left of the notes: pitch labels

function rollGeometry() {
  const canvas = $("roll");
  const notes = editor.session.notes;
  const low = Math.min(...notes.map((n) => n.pitch)) - 2;
  const high = Math.max(...notes.map((n) => n.pitch)) + 2;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  const secondsToX = (width - ROLL_MARGIN - 4) / editor.session.duration;
  const rowHeight = height / (high - low + 1);
  return {
    canvas, width, height, low, high, rowHeight,
    x: (seconds) => ROLL_MARGIN + seconds * secondsToX,
    y: (pitch) => (high - pitch) * rowHeight,
    seconds: (x) => (x - ROLL_MARGIN) / secondsToX,
  };
}

// A note's rectangle in the canvas's CSS pixels.
function noteBox(note, geometry) {
  const x = geometry.x(note.start);
  return { x, y: geometry.y(note.pitch), w: Math.max(2, geometry.x(note.end) - x), h: Math.max(2, geometry.rowHeight - 1) };
}

// For tests and tools: a note's rectangle in page coordinates.
editor.noteRect = (id) => {
  const rect = $("roll").getBoundingClientRect();
  const box = noteBox(editor.notesById.get(id), rollGeometry());
  return { x: rect.left + box.x, y: rect.top + box.y, w: box.w, h: box.h };
};

function controlColour(value) {
  const hue = 240 - 240 * value; // blue (0) .. red (1)
  return `hsl(${hue}, 70%, 55%)`;
}

function prepareCanvas(canvas) {
  const scale = window.devicePixelRatio || 1;
  canvas.width = canvas.clientWidth * scale;
  canvas.height = canvas.clientHeight * scale;
  const context = canvas.getContext("2d");
  context.setTransform(scale, 0, 0, scale, 0, 0);
  context.clearRect(0, 0, canvas.clientWidth, canvas.clientHeight);
  return context;
}

function drawRoll(box) {
  if (!editor.session) return;
  const geometry = rollGeometry();
  const context = prepareCanvas(geometry.canvas);
  context.font = "10px system-ui";
  for (let pitch = geometry.low; pitch <= geometry.high; pitch += 1) {
    if (pitch % 12 === 0 || [1, 3, 6, 8, 10].includes(pitch % 12)) {
      context.fillStyle = pitch % 12 === 0 ? "#e6e9ee" : "#f1f3f6";
      context.fillRect(ROLL_MARGIN, geometry.y(pitch), geometry.width, geometry.rowHeight);
    }
    if (pitch % 12 === 0) {
      context.fillStyle = "#6b7480";
      context.fillText(`C${pitch / 12 - 1}`, 4, geometry.y(pitch) + geometry.rowHeight - 1);
    }
  }
  for (let second = 0; second < editor.session.duration; second += 1) {
    context.fillStyle = "#c9ced6";
    context.fillRect(geometry.x(second), 0, 1, geometry.height);
  }
  for (const note of editor.session.notes) {
    const rect = noteBox(note, geometry);
    context.fillStyle = controlColour(note.controls[editor.colourBy]);
    context.fillRect(rect.x, rect.y, rect.w, rect.h);
    if (editor.selected.has(note.id)) {
      context.lineWidth = 2;
      context.strokeStyle = "#111";
      context.strokeRect(rect.x, rect.y, rect.w, rect.h);
    }
  }
  if (box) {
    context.strokeStyle = "#2463d1";
    context.setLineDash([4, 3]);
    context.strokeRect(box.x0, box.y0, box.x1 - box.x0, box.y1 - box.y0);
    context.setLineDash([]);
  }
}

function noteAt(x, y) {
  const geometry = rollGeometry();
  return editor.session.notes.find((note) => {
    const rect = noteBox(note, geometry);
    return x >= rect.x && x <= rect.x + rect.w && y >= rect.y && y <= rect.y + rect.h;
  });
}

// Click: select one note; shift-click: add or remove it; drag: select the notes the box touches.
function setUpRollMouse() {
  const canvas = $("roll");
  let drag = null;
  const point = (event) => {
    const rect = canvas.getBoundingClientRect();
    return { x: event.clientX - rect.left, y: event.clientY - rect.top };
  };
  canvas.addEventListener("mousedown", (event) => {
    const p = point(event);
    drag = { x0: p.x, y0: p.y, x1: p.x, y1: p.y, shift: event.shiftKey };
  });
  canvas.addEventListener("mousemove", (event) => {
    if (!drag) return;
    const p = point(event);
    drag.x1 = p.x;
    drag.y1 = p.y;
    drawRoll(normalisedBox(drag));
  });
  window.addEventListener("mouseup", () => {
    if (!drag) return;
    const box = normalisedBox(drag);
    const moved = box.x1 - box.x0 > 3 || box.y1 - box.y0 > 3;
    if (!drag.shift) editor.selected.clear();
    if (moved) {
      const geometry = rollGeometry();
      for (const note of editor.session.notes) {
        const rect = noteBox(note, geometry);
        if (rect.x < box.x1 && rect.x + rect.w > box.x0 && rect.y < box.y1 && rect.y + rect.h > box.y0) {
          editor.selected.add(note.id);
        }
      }
    } else {
      const note = noteAt(drag.x0, drag.y0);
      if (note && drag.shift && editor.selected.has(note.id)) editor.selected.delete(note.id);
      else if (note) editor.selected.add(note.id);
    }
    drag = null;
    selectionChanged();
  });
}

function normalisedBox(drag) {
  return { x0: Math.min(drag.x0, drag.x1), x1: Math.max(drag.x0, drag.x1),
           y0: Math.min(drag.y0, drag.y1), y1: Math.max(drag.y0, drag.y1) };
}

function selectionChanged() {
  drawRoll();
  updateSliders();
  guarded(drawCurves);
}

function selectedNotes() {
  return [...editor.selected].map((id) => editor.notesById.get(id)).filter(Boolean);
}

// ------------------------------------------------------------------------------------------------ curves
async function drawCurves() {
  const canvas = $("curves");
  const context = prepareCanvas(canvas);
  const notes = selectedNotes();
  context.font = "11px system-ui";
  context.fillStyle = "#6b7480";
  if (notes.length === 0) {
    context.fillText("select a note to see its level and pitch", 10, 20);
    return;
  }
  const first = notes.reduce((a, b) => (a.start <= b.start ? a : b));
  const curves = await (await api("GET", `/api/notes/${encodeURIComponent(first.id)}/curves`)).json();
  const width = canvas.clientWidth;
  const half = canvas.clientHeight / 2;
  const count = curves.amplitude_db.length;
  const x = (frame) => 40 + (frame / Math.max(1, count - 1)) * (width - 50);
  const sounding = curves.amplitude_db.filter((db) => db > -99);
  const top = Math.max(...sounding, -20) + 3;
  const bottom = Math.max(Math.min(...sounding, top - 20), top - 80) - 3;
  const cents = curves.f0_hz.map((hz) => (hz === null ? null : 1200 * Math.log2(hz / 440) + 6900 - 100 * curves.pitch));
  const centsRange = Math.max(50, ...cents.filter((c) => c !== null).map(Math.abs));
  const noteX = (seconds) => x((seconds - curves.start) * curves.frame_rate);
  context.fillStyle = "#eef3fb";
  context.fillRect(noteX(curves.note_start), 0, noteX(curves.note_end) - noteX(curves.note_start), 2 * half);
  context.fillStyle = "#6b7480";
  context.fillText(`${top.toFixed(0)} dB`, 2, 12);
  context.fillText(`${bottom.toFixed(0)} dB`, 2, half - 4);
  context.fillText(`+${centsRange.toFixed(0)}¢`, 2, half + 12);
  context.fillText(`-${centsRange.toFixed(0)}¢`, 2, 2 * half - 4);
  context.fillRect(40, half, width - 50, 1);
  plotLine(context, curves.amplitude_db.map((db) => (db > -99 ? db : null)), x,
           (db) => ((top - db) / (top - bottom)) * (half - 4) + 2, "#c0392b");
  plotLine(context, cents, x, (c) => half + half / 2 - (c / centsRange) * (half / 2 - 4), "#2463d1");
  context.fillStyle = "#39414b";
  context.fillText(`note ${first.id}, pitch ${first.pitch}`, 44, 12);
}

function plotLine(context, values, x, y, colour) {
  context.strokeStyle = colour;
  context.lineWidth = 1.5;
  context.beginPath();
  let drawing = false;
  values.forEach((value, frame) => {
    if (value === null) { drawing = false; return; }
    if (drawing) context.lineTo(x(frame), y(value)); else context.moveTo(x(frame), y(value));
    drawing = true;
  });
  context.stroke();
}

// ------------------------------------------------------------------------------------------------ sliders
function physicalText(control, value) {
  const physical = control.low + value * (control.high - control.low);
  const unit = control.unit === "fraction of the note" ? "of the note" : control.unit;
  return `${physical.toFixed(control.unit === "dB" || control.unit === "cents" ? 1 : 2)} ${unit}`;
}

function buildSliders() {
  const container = $("sliders");
  container.replaceChildren();
  const colourBy = $("colour-by");
  colourBy.replaceChildren();
  for (const control of editor.session.controls) {
    colourBy.add(new Option(control.name.replaceAll("_", " "), control.name, false, control.name === editor.colourBy));
    const block = document.createElement("div");
    block.className = "slider";
    block.innerHTML = `<label for="slider-${control.name}"></label><span class="value"></span>
      <input type="range" min="0" max="1" step="0.001" id="slider-${control.name}">
      <label class="fix"><input type="checkbox" data-fixed="${control.name}"> keep when resampling</label>`;
    block.querySelector("label").textContent = control.name.replaceAll("_", " ");
    const slider = block.querySelector("input[type=range]");
    const valueText = block.querySelector(".value");
    slider.addEventListener("input", () => {
      valueText.textContent = `${Number(slider.value).toFixed(3)} · ${physicalText(control, Number(slider.value))}`;
    });
    slider.addEventListener("change", () => guarded(async () => {
      const edits = selectedNotes().map((note) => ({ id: note.id, [control.name]: Number(slider.value) }));
      if (edits.length === 0) return;
      const changed = await (await api("PATCH", "/api/notes", { edits })).json();
      mergeNotes(changed.notes);
      await afterChange();
    }));
    container.append(block);
  }
}

// The sliders show the selection's mean value (an edit sets every selected note to the slider's value).
function updateSliders() {
  const notes = selectedNotes();
  $("selection-count").textContent = notes.length === 0 ? "no note" : notes.length === 1
    ? `note ${notes[0].id} (pitch ${notes[0].pitch}, ${notes[0].start.toFixed(2)}–${notes[0].end.toFixed(2)} s)`
    : `${notes.length} notes`;
  for (const control of editor.session.controls) {
    const slider = $(`slider-${control.name}`);
    slider.disabled = notes.length === 0;
    const valueText = slider.parentElement.querySelector(".value");
    if (notes.length === 0) { valueText.textContent = ""; continue; }
    const mean = notes.reduce((sum, note) => sum + note.controls[control.name], 0) / notes.length;
    slider.value = String(mean);
    valueText.textContent = `${mean.toFixed(3)} · ${physicalText(control, mean)}`;
  }
  $("resample").disabled = notes.length === 0;
  $("play-selection").disabled = notes.length === 0;
}

// ------------------------------------------------------------------------------------------------ toolbar
function download(url, name) {
  const link = $("download");
  link.href = url;
  link.download = name;
  link.click();
}

function baseName() {
  return (editor.session.file || "performance").replace(/\.midi?$/i, "");
}

function setUpToolbar() {
  $("play-all").addEventListener("click", () => guarded(() => play()));
  $("play-selection").addEventListener("click", () => guarded(() => {
    const notes = selectedNotes();
    const start = Math.max(0, Math.min(...notes.map((n) => n.start)) - 0.1);
    const end = Math.max(...notes.map((n) => n.end)) + 0.5;
    return play({ start, end });
  }));
  $("stop").addEventListener("click", () => $("player").pause());
  $("undo").addEventListener("click", () => guarded(async () => { await api("POST", "/api/undo"); await afterChange(); }));
  $("redo").addEventListener("click", () => guarded(async () => { await api("POST", "/api/redo"); await afterChange(); }));
  $("save-wav").addEventListener("click", () => guarded(async () => {
    await render();
    download(editor.audioUrl, `${baseName()}.wav`);
  }));
  $("save-csv").addEventListener("click", () => guarded(async () => {
    const blob = await (await api("GET", "/api/expression.csv")).blob();
    const url = URL.createObjectURL(blob);
    download(url, `${baseName()}.csv`);
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }));
  $("load-csv").addEventListener("change", () => guarded(async () => {
    const file = $("load-csv").files[0];
    $("load-csv").value = "";
    if (!file) return;
    const result = await (await api("PUT", "/api/expression.csv", await file.text(), true)).json();
    clearError();
    await afterChange();
    setStatus(`loaded ${file.name}` + (result.messages.length ? `: ${result.messages.join("; ")}` : ""));
  }));
  $("resample").addEventListener("click", () => guarded(async () => {
    const fixed = [...document.querySelectorAll("[data-fixed]")].filter((box) => box.checked).map((box) => box.dataset.fixed);
    const request = { ids: [...editor.selected], seed: Number($("seed").value), temperature: Number($("temperature").value),
                      fixed_columns: fixed };
    await api("POST", "/api/resample", request);
    await afterChange();
  }));
  $("colour-by").addEventListener("change", () => { editor.colourBy = $("colour-by").value; drawRoll(); });
  $("error-close").addEventListener("click", clearError);
  document.addEventListener("keydown", (event) => {
    if (!(event.ctrlKey || event.metaKey) || event.key.toLowerCase() !== "z") return;
    event.preventDefault();
    $(event.shiftKey ? "redo" : "undo").click();
  });
  // redraw when a canvas changes size: the window, and the page's own layout (the tracks table filling in, a
  // scroll bar appearing), which a window "resize" event does not report
  let pending = false;
  new ResizeObserver(() => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; drawRoll(); guarded(drawCurves); });
  }).observe($("roll"));
}

window.addEventListener("error", (event) => showError(`page error: ${event.message}`));
window.addEventListener("unhandledrejection", (event) => showError(`page error: ${event.reason}`));

document.addEventListener("DOMContentLoaded", () => guarded(async () => {
  setUpToolbar();
  setUpRollMouse();
  editor.session = await (await api("GET", "/api/session")).json();
  buildSliders();
  await loadSession();
  await render();
  editor.ready = true;
}));
