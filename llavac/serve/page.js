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
  } catch (err) {
    showError("The server did not answer: " + err);
    $("result").dataset.state = "error";
  } finally {
    $("submit").disabled = false;
  }
});

$("auth").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_ITEM, key);
  $("api-key").value = "";
  loadModel();
});

loadModel();
