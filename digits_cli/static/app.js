// The digits web page: send a picture (uploaded or drawn) to /annotations and /predictions,
// then show the annotated picture, the text read and every digit. Plain DOM, no framework.
"use strict";

const $ = (id) => document.getElementById(id);
let annotatedUrl = null;

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error) return `${response.status}: ${body.error}`;
  } catch (_) {
    // not JSON: fall through to the status line
  }
  return `${response.status} ${response.statusText}`;
}

function post(path, picture, name) {
  const form = new FormData();
  form.append("file", picture, name);
  return fetch(path, { method: "POST", body: form });
}

function showDigits(digits) {
  const body = $("digits").querySelector("tbody");
  body.replaceChildren();
  for (const digit of digits) {
    const row = document.createElement("tr");
    const cells = [String(digit.label), digit.confidence.toFixed(3), digit.box.join(", ")];
    for (const value of cells) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.append(cell);
    }
    body.append(row);
  }
  $("digits").hidden = digits.length === 0;
}

async function read(picture, name) {
  showError("");
  $("status").textContent = `Reading ${name}…`;
  try {
    const [annotated, predicted] = await Promise.all([
      post("/annotations", picture, name),
      post("/predictions", picture, name),
    ]);
    if (!annotated.ok) throw new Error(await errorMessage(annotated));
    if (!predicted.ok) throw new Error(await errorMessage(predicted));
    const reading = await predicted.json();
    if (annotatedUrl) URL.revokeObjectURL(annotatedUrl);
    annotatedUrl = URL.createObjectURL(await annotated.blob());
    $("annotated").src = annotatedUrl;
    $("annotated").hidden = false;
    $("text").textContent = reading.text;
    showDigits(reading.digits);
    const count = reading.digits.length;
    $("status").textContent = count
      ? `${count} digit${count === 1 ? "" : "s"} found in ${name} (${reading.width}×${reading.height}).`
      : `No digit found in ${name}.`;
  } catch (error) {
    $("status").textContent = "Reading failed.";
    showError(error.message);
  }
}

// --- upload ---------------------------------------------------------------------------------

$("file").addEventListener("change", () => {
  const file = $("file").files[0];
  if (file) read(file, file.name);
});

const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const file = event.dataTransfer.files[0];
  if (file) read(file, file.name);
});

// --- drawing (mouse, pen or finger through pointer events) -------------------------------------

const pad = $("pad");
const pen = pad.getContext("2d");

function clearPad() {
  pen.fillStyle = "#fff";
  pen.fillRect(0, 0, pad.width, pad.height);
}

function padPoint(event) {
  const frame = pad.getBoundingClientRect();
  return [
    ((event.clientX - frame.left) * pad.width) / frame.width,
    ((event.clientY - frame.top) * pad.height) / frame.height,
  ];
}

let drawing = false;
pad.addEventListener("pointerdown", (event) => {
  drawing = true;
  pad.setPointerCapture(event.pointerId);
  const [x, y] = padPoint(event);
  pen.beginPath();
  pen.moveTo(x, y);
  pen.lineTo(x + 0.1, y);
  pen.stroke();
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const [x, y] = padPoint(event);
  pen.lineTo(x, y);
  pen.stroke();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    drawing = false;
  });
}

pen.lineWidth = 14;
pen.lineCap = "round";
pen.lineJoin = "round";
pen.strokeStyle = "#000";
clearPad();

$("clear").addEventListener("click", clearPad);
$("read-drawing").addEventListener("click", () => {
  pad.toBlob((blob) => read(blob, "drawing.png"), "image/png");
});
