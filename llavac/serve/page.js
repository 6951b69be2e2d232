// The page's script (llavac/serve/page.html); served as /page.js. It writes answers with
// textContent only: they are data, never markup.
"use strict";
const SLOT_TITLES = {text: "Text", image: "Image", multimodal: "Multimodal"};
let labels = ["negative", "neutral", "positive"];
let maxText = null;
const $ = (id) => document.getElementById(id);
const KEY_ITEM = "llavac-api-key";

function authHeaders() {
  const key = sessionStorage.getItem(KEY_ITEM);
  return key ? {Authorization: "Bearer " + key} : {};
}

function askForKey(message) {  // a 401: forget a stale key, ask once more
  sessionStorage.removeItem(KEY_ITEM);
  $("auth").style.display = "block";
  $("model-line").textContent = message;
  $("api-key").focus();
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;  // never innerHTML: answers are data
  return node;
}

function renderSlots(prediction) {
  const box = $("slots");
  box.replaceChildren();
  for (const slot of ["text", "image", "multimodal"]) {
    const label = prediction ? prediction[slot + "_label"] : null;
    const probs = prediction && prediction.probabilities ? prediction.probabilities[slot] : null;
    const row = el("div", "slot");
    const head = el("h3", null, SLOT_TITLES[slot]);
    const badge = el("span", "badge" + (label ? " " + label : ""), label || "\u2014");
    badge.id = "label-" + slot;
    badge.dataset.label = label || "";
    head.append(badge);
    row.append(head);
    if (prediction && !probs) row.append(el("div", "muted", "not asked by this prompt"));
    for (const name of labels) {
      const p = probs && typeof probs[name] === "number" ? probs[name] : 0;
      const bar = el("div", "bar");
      const track = el("div", "track");
      const fill = el("div", "fill " + name);
      fill.style.width = (100 * p).toFixed(1) + "%";
      track.append(fill);
      bar.append(el("span", null, name), track, el("span", "pct", probs ? (100 * p).toFixed(1) + "%" : ""));
      row.append(bar);
    }
    box.append(row);
  }
}

function showError(message) {
  $("error").textContent = message;
  $("error").style.display = message ? "block" : "none";
}

async function loadModel() {
  try {
    const sent = sessionStorage.getItem(KEY_ITEM);
    const response = await fetch("/v1/model", {headers: authHeaders()});
    if (response.status === 401) {
      askForKey(sent ? "The API key was not accepted" : "Enter the API key to use this server");
      return;
    }
    $("auth").style.display = "none";
    const info = await response.json();
    if (Array.isArray(info.labels)) labels = info.labels;
    maxText = info.limits ? info.limits.max_text_chars : null;
    const parts = ["Model: " + info.model];
    if (info.adapter) parts.push("adapter: " + info.adapter);
    if (info.prompt) parts.push("prompt: " + info.prompt);
    $("model-line").textContent = parts.join(" \u00b7 ");
  } catch (err) {
    $("model-line").textContent = "Model information unavailable";
  }
  updateCount();
  renderSlots(null);
}

function updateCount() {
  const n = $("text").value.length;
  $("count").textContent = maxText ? n + " / " + maxText : "";
}

$("text").addEventListener("input", updateCount);
$("drop").addEventListener("click", () => $("image").click());
$("image").addEventListener("change", () => {
  const file = $("image").files[0];
  const drop = $("drop");
  drop.replaceChildren();
  if (!file) { drop.append(el("span", null, "Choose an image below")); return; }
  const img = el("img");
  img.alt = file.name;
  img.src = URL.createObjectURL(file);
  drop.append(img);
});

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("");
  const file = $("image").files[0];
  if (!file) { showError("Choose an image first."); return; }
  const body = new FormData();
  body.append("image", file);
  body.append("text", $("text").value);
  resetExplain({file, text: $("text").value});
  $("submit").disabled = true;
  $("result").dataset.state = "loading";
  try {
    const response = await fetch("/v1/classify", {method: "POST", body, headers: authHeaders()});
    const data = await response.json();
    if (response.status === 401) askForKey("The API key was not accepted");
    if (!response.ok) {
      showError(data.error || ("Request failed (" + response.status + ")"));
      $("result").dataset.state = "error";
      return;
    }
    renderSlots(data);
    let meta = "Answered by " + data.model + " in " + data.latency_ms + " ms";
    if (typeof data.answer === "string") {  // method=generate: show what the model wrote
      meta += " \u00b7 answer: \u201c" + data.answer + "\u201d";
      if (!data.multimodal_label) meta += " (not one label per slot)";
    }
    $("meta").textContent = meta;
    $("result").dataset.state = "done";
    // Explanations read probabilities: a server that generates answers has none to explain.
    $("explain-toggle").hidden = !data.probabilities || !data.probabilities.multimodal;
  } catch (err) {
    showError("The server did not answer: " + err);
    $("result").dataset.state = "error";
  } finally {
    $("submit").disabled = false;
  }
});

// -- the explain view: POST /v1/explain for the classified pair, drawn for one slot --------
// Colours and strengths as llavac/explain/heatmap.py draws its PNGs.
const SUPPORTS = [220, 30, 30], OPPOSES = [30, 90, 220];
const MAX_ALPHA = 170 / 255, MIN_SCALE = 0.05, HEATMAP_SIDE = 336;
let explained = {pair: null, answer: null};

function resetExplain(pair) {
  explained = {pair, answer: null};
  $("explain-toggle").hidden = true;
  setExplainOpen(false);
  $("explain").dataset.state = "empty";
}

function setExplainOpen(open) {
  $("explain-toggle").setAttribute("aria-expanded", String(open));
  $("explain").hidden = !open;
}

function signed(value) {
  return (value >= 0 ? "+" : "\u2212") + Math.abs(value).toFixed(3);
}

function tint(drop, norm) {  // red supports the label, blue argues against it
  const [r, g, b] = drop > 0 ? SUPPORTS : OPPOSES;
  return "rgba(" + r + "," + g + "," + b + "," + (MAX_ALPHA * Math.min(1, Math.abs(drop) / norm)) + ")";
}

function renderWords(answer, slot) {
  const ranked = answer.words.map((w) => ({word: w.word, drop: w.drop[slot]}))
    .sort((a, b) => b.drop - a.drop);
  const norm = Math.max(MIN_SCALE, ...ranked.map((w) => Math.abs(w.drop)));
  const list = $("explain-words");
  list.replaceChildren();
  for (const {word, drop} of ranked) {
    const item = el("li");
    item.dataset.word = word;
    item.dataset.drop = String(drop);
    const chip = el("span", "word", word);
    chip.style.backgroundColor = tint(drop, norm);
    item.append(chip, el("span", "pct", signed(drop)));
    list.append(item);
  }
  if (!ranked.length) list.append(el("li", "muted", "the text has no words"));
}

function renderHeatmap(answer, slot, image) {
  const {grid, canvas_size: [width, height], drop} = answer.regions;
  const scale = HEATMAP_SIDE / Math.max(width, height);
  const canvas = $("explain-heatmap");
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#808080";  // the canvas is the padded square for image_mode pad
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const fit = Math.min(canvas.width / image.naturalWidth, canvas.height / image.naturalHeight);
  const w = image.naturalWidth * fit, h = image.naturalHeight * fit;
  ctx.drawImage(image, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
  const cells = drop[slot].flat();
  const strongest = cells.reduce((a, b) => (Math.abs(b) > Math.abs(a) ? b : a), 0);
  const norm = Math.max(MIN_SCALE, Math.abs(strongest));
  cells.forEach((value, i) => {  // the cells of llavac.explain.occlusion.grid_cells
    const row = Math.floor(i / grid), col = i % grid;
    const x0 = Math.floor(col * canvas.width / grid), y0 = Math.floor(row * canvas.height / grid);
    const x1 = Math.floor((col + 1) * canvas.width / grid);
    const y1 = Math.floor((row + 1) * canvas.height / grid);
    ctx.fillStyle = tint(value, norm);
    ctx.fillRect(x0, y0, x1 - x0, y1 - y0);
  });
  const at = cells.indexOf(strongest);
  canvas.dataset.grid = String(grid);
  canvas.dataset.strongest = String(at);
  canvas.setAttribute("aria-label", grid + " by " + grid + " heatmap over the image; the " +
    "strongest cell is row " + (Math.floor(at / grid) + 1) + ", column " + (at % grid + 1) +
    " (" + signed(strongest) + ")");
}

function renderExplanation() {
  const answer = explained.answer, slot = $("explain-slot").value;
  const reliance = answer.modality[slot];
  $("explain-reliance").textContent = SLOT_TITLES[slot] + " label " + answer.labels[slot] +
    ": blanking the image moves its probabilities by " +
    reliance.image_blanked.shift.toFixed(3) + ", removing the text by " +
    reliance.text_removed.shift.toFixed(3) + " (follows: " + reliance.follows + ")";
  renderWords(answer, slot);
  const image = new Image();
  image.onload = () => {
    renderHeatmap(answer, slot, image);
    URL.revokeObjectURL(image.src);
    $("explain").dataset.state = "done";
  };
  image.src = URL.createObjectURL(explained.pair.file);
}

async function fetchExplanation() {
  const pair = explained.pair;
  const body = new FormData();
  body.append("image", pair.file);
  body.append("text", pair.text);
  $("explain").dataset.state = "loading";
  $("explain-status").textContent = "Scoring the pair with each part taken away\u2026";
  try {
    const response = await fetch("/v1/explain", {method: "POST", body, headers: authHeaders()});
    const data = await response.json();
    if (explained.pair !== pair) return;  // a newer classification replaced this pair
    if (response.status === 401) askForKey("The API key was not accepted");
    if (!response.ok) {
      $("explain-status").textContent = data.error || ("Request failed (" + response.status + ")");
      $("explain").dataset.state = "error";
      return;
    }
    explained.answer = data;
    $("explain-status").textContent = data.variants + " variants scored in " +
      data.latency_ms + " ms";
    renderExplanation();
  } catch (err) {
    $("explain-status").textContent = "The server did not answer: " + err;
    $("explain").dataset.state = "error";
  }
}

$("explain-toggle").addEventListener("click", () => {
  const open = $("explain-toggle").getAttribute("aria-expanded") !== "true";
  setExplainOpen(open);
  if (open && !explained.answer && $("explain").dataset.state !== "loading") fetchExplanation();
});
$("explain-slot").addEventListener("change", () => { if (explained.answer) renderExplanation(); });

$("auth").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_ITEM, key);
  $("api-key").value = "";
  loadModel();
});

loadModel();
