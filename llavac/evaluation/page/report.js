// The llavac evaluation report: draws the data block into the page, then filters and sorts
// the gallery. Plain DOM, no libraries, no requests. Texts are set as textContent, never as
// HTML, so a tweet cannot inject markup.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const metrics = data.metrics;
  const slots = data.slots;
  const SVG = "http://www.w3.org/2000/svg";

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    node.append(...children);
    return node;
  }
  function svg(tag, attributes) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    return node;
  }
  const num = (x, digits = 3) => (x === null || x === undefined ? "–" : x.toFixed(digits));
  const percent = (x) => Math.round(100 * x) + " %";
  const label = (word) => el("span", { class: word || "" }, word || "unparseable");
  const row = (cells, tag = "td") => el("tr", {}, ...cells.map((cell) => el(tag, {}, cell)));

  function header() {
    const p = metrics.provenance || {};
    const what = p.adapter || (p.model + " (zero-shot)");
    document.getElementById("title").textContent = "Evaluation of " + what;
    document.title = "llavac: " + what;
    document.getElementById("provenance").textContent = [
      "model " + p.model, "method " + metrics.method, "prompt " + metrics.prompt,
      "procedure " + metrics.procedure + (metrics.fold ? " fold " + metrics.fold : ""),
      "part " + metrics.part, metrics.records + " pairs", "llavac " + p.llavac_version,
    ].join(" · ");
  }

  function headline() {
    const table = document.getElementById("headline");
    const scored = Object.values(metrics.slots).some((v) => "ece" in v);
    // data.columns: the headline scores of llavac's METRICS table, each with its interval.
    const names = ["label", "n"].concat(data.columns.map((c) => c.title + (c.ci ? " (95 % CI)" : "")));
    table.append(row(scored ? names.concat(["ECE", "NLL", "Brier", "AURC"]) : names, "th"));
    for (const [slot, v] of Object.entries(metrics.slots)) {
      if (!v.n) continue;
      const withCi = (value, ci) => el("span", {}, num(value, 4) + " ",
        el("span", { class: "ci" }, "[" + num(ci[0], 4) + ", " + num(ci[1], 4) + "]"));
      const cells = [slot, String(v.n)].concat(data.columns.map((c) =>
        c.ci && v[c.ci] ? withCi(v[c.name], v[c.ci]) : num(v[c.name], 4)));
      if (scored) for (const key of ["ece", "nll", "brier", "aurc"]) cells.push(num(v[key], 4));
      table.append(row(cells));
    }
    const calibration = metrics.calibration || {};
    document.getElementById("calibration-note").textContent =
      (metrics.unparseable ? metrics.unparseable + " unparseable answers, counted as wrong. " : "") +
      (calibration.headline ? "Probabilities: " + calibration.headline + "." : "");
  }

  function confusion() {
    const box = document.getElementById("confusion");
    for (const [slot, v] of Object.entries(metrics.slots)) {
      if (!v.confusion_matrix) continue;
      const { labels, matrix } = v.confusion_matrix;
      const most = Math.max(1, ...matrix.flat());
      const table = el("table", { class: "matrix" },
        el("caption", {}, slot + ": gold (rows) × predicted (columns)"),
        row(["gold \\ predicted"].concat(labels), "th"));
      matrix.forEach((counts, i) => {
        const tr = row([labels[i]].concat(counts.map(String)));
        counts.forEach((count, j) => {
          tr.children[j + 1].style.backgroundColor = "rgba(30, 90, 200, " + (0.6 * count / most) + ")";
        });
        table.append(tr);
      });
      box.append(table);
    }
  }

  function reliabilityDiagram(slot, bins) {
    const size = 220, pad = 28, inner = size - 2 * pad;
    const x = (c) => pad + c * inner, y = (a) => size - pad - a * inner;
    const total = bins.count.reduce((a, b) => a + b, 0);
    const picture = svg("svg", { width: size, height: size, viewBox: "0 0 " + size + " " + size,
                                 role: "img", "aria-label": slot + " reliability diagram" });
    picture.append(svg("rect", { x: pad, y: pad, width: inner, height: inner, fill: "none",
                                 stroke: "#c5ccd6" }));
    bins.count.forEach((count, b) => {
      if (!count) return;
      const bar = svg("rect", { x: x(bins.edges[b]) + 0.5, y: y(bins.accuracy[b]),
        width: inner * (bins.edges[b + 1] - bins.edges[b]) - 1, height: inner * bins.accuracy[b],
        fill: "rgb(30, 90, 200)", "fill-opacity": 0.25 + 0.75 * count / total });
      const tip = svg("title", {});
      tip.textContent = count + " pairs, confidence " + num(bins.confidence[b]) +
        ", accuracy " + num(bins.accuracy[b]);
      bar.append(tip);
      picture.append(bar);
    });
    picture.append(svg("line", { x1: x(0), y1: y(0), x2: x(1), y2: y(1), stroke: "#c0392b",
                                 "stroke-dasharray": "4 3" }));
    for (const tick of [0, 0.5, 1]) {
      const below = svg("text", { x: x(tick), y: size - pad + 12, "text-anchor": "middle" });
      below.textContent = tick;
      const left = svg("text", { x: pad - 4, y: y(tick) + 3, "text-anchor": "end" });
      left.textContent = tick;
      picture.append(below, left);
    }
    const caption = el("figcaption", {}, slot + ": accuracy against confidence");
    return el("figure", { class: "diagram" }, caption, picture);
  }

  function reliability() {
    const box = document.getElementById("reliability");
    const entries = Object.entries(data.reliability);
    if (!entries.length) box.append(el("p", { class: "note" }, "No probabilities: the " +
      metrics.method + " method gives labels only."));
    for (const [slot, bins] of entries) box.append(reliabilityDiagram(slot, bins));
  }

  function reliance() {
    const box = document.getElementById("reliance");
    const measured = metrics.modality_reliance;
    if (!measured) {
      box.append(el("p", { class: "note" }, "Not measured: it needs probabilities (method " +
        "score) and eval.reliance_pairs above 0."));
      return;
    }
    const sentences = Object.entries(measured.slots).map(([slot, v]) =>
      "The " + slot + " label follows the text in " + percent(v.follows_text) +
      " of pairs and the image in " + percent(v.follows_image) + ".");
    const on = measured.sample_seed === null ? "all " + measured.pairs + " pairs" :
      "a sample of " + measured.pairs + " of " + measured.of + " pairs (seed " +
      measured.sample_seed + ")";
    box.append(el("p", { id: "reliance-summary" }, sentences.join(" ") + " Measured on " + on + "."));
    const table = el("table", {}, row(["label", "shift, image blanked", "shift, text removed",
      "follows image", "follows text", "label flips, image blanked", "label flips, text removed"], "th"));
    for (const [slot, v] of Object.entries(measured.slots)) {
      table.append(row([slot, num(v.image_shift), num(v.text_shift), percent(v.follows_image),
        percent(v.follows_text), percent(v.image_flips), percent(v.text_flips)]));
    }
    box.append(table);
  }

  function galleryItem(item) {
    const picture = item.thumb ? el("img", { src: item.thumb, alt: "image of pair " + item.id })
      : el("div", { class: "no-image" }, "no image");
    const names = ["", "gold", "predicted", "p"];
    if (item.shift) names.push("−image", "−text");
    const table = el("table", { title: "p: the predicted label's probability; −image, −text: " +
      "the shift with the image blanked, with the text removed" }, row(names, "th"));
    for (const slot of slots) {
      const gold = item.gold[slot], predicted = item.predicted[slot];
      const cells = [slot, gold ? label(gold) : "–", label(predicted), num(item.confidence[slot], 2)];
      if (item.shift) cells.push(num(item.shift.image[slot], 2), num(item.shift.text[slot], 2));
      const tr = row(cells);
      if (gold && predicted !== gold) tr.className = "wrong";
      table.append(tr);
    }
    // data-correct: the multimodal answer, for tools and tests ("" without a gold label).
    const gold = item.gold.multimodal;
    const correct = gold ? String(item.predicted.multimodal === gold) : "";
    return el("article", { class: "item", "data-id": item.id, "data-correct": correct },
      picture, el("div", { class: "body" }, el("p", { class: "pair-id" }, "#" + item.id),
        el("p", { class: "text" }, item.text === null ? "(record not found)" : item.text)),
      table);
  }

  const controls = ["f-slot", "f-correct", "f-gold", "f-predicted", "f-min", "f-max", "f-sort"]
    .map((id) => document.getElementById(id));
  const [slotBox, correctBox, goldBox, predictedBox, minBox, maxBox, sortBox] = controls;

  function options(select, values, first) {
    if (first) select.append(el("option", { value: "" }, first));
    for (const value of values) select.append(el("option", { value: value }, value));
  }

  function filters() {
    return { slot: slotBox.value, correct: correctBox.value, gold: goldBox.value,
             predicted: predictedBox.value, min: Number(minBox.value), max: Number(maxBox.value),
             sort: sortBox.value };
  }

  function passes(item, f) {
    const gold = item.gold[f.slot], predicted = item.predicted[f.slot];
    const confidence = item.confidence[f.slot];
    if (f.correct !== "all" && (!gold || (f.correct === "correct") !== (predicted === gold))) return false;
    if (f.gold && gold !== f.gold) return false;
    if (f.predicted && predicted !== f.predicted) return false;
    const whole = f.min <= 0 && f.max >= 1;
    return whole || (confidence !== null && confidence >= f.min && confidence <= f.max);
  }

  function sortKey(item, index, f) {
    const confidence = item.confidence[f.slot];
    const known = confidence === null ? -1 : confidence;
    const wrong = item.gold[f.slot] && item.predicted[f.slot] !== item.gold[f.slot] ? 0 : 1;
    if (f.sort === "confident-errors") return [wrong, -known, index];
    if (f.sort === "confidence-desc") return [-known, index];
    if (f.sort === "confidence-asc") return [confidence === null ? 2 : confidence, index];
    return [index];
  }

  function gallery() {
    const box = document.getElementById("gallery");
    const items = data.gallery.map((item, index) => ({ item, index, node: galleryItem(item) }));
    options(slotBox, slots.slice().reverse());
    options(goldBox, data.labels, "any");
    options(predictedBox, data.labels, "any");
    const note = document.getElementById("gallery-note");
    note.textContent = [data.note, data.missing_records ? data.missing_records +
      " predictions name a pair the data no longer holds (shown without image or text)." : "",
      "Thumbnails at most " + data.thumbnail_side + " px; this file is capped at " + data.max_mb +
      " MB."].filter(Boolean).join(" ");

    function update() {
      const f = filters();
      const compare = (a, b) => {
        const ka = sortKey(a.item, a.index, f), kb = sortKey(b.item, b.index, f);
        for (let i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return ka[i] - kb[i];
        return 0;
      };
      let shown = 0;
      for (const entry of items.slice().sort(compare)) {
        entry.node.hidden = !passes(entry.item, f);
        shown += !entry.node.hidden;
        box.append(entry.node);  // appending an attached node moves it: the sorted order
      }
      document.getElementById("shown").textContent = "Showing " + shown + " of " +
        items.length + " pairs in the gallery (" + data.total + " evaluated).";
    }
    for (const control of controls) control.addEventListener("input", update);
    update();
  }

  header();
  headline();
  confusion();
  reliability();
  reliance();
  gallery();
})();
