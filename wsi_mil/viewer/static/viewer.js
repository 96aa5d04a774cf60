/* wsi-mil view: the slide list, the OpenSeadragon viewer with overlay layers, and ratings.
   Every overlay is a Deep Zoom pyramid with the slide's own geometry, added as a second
   tiled image over the whole slide (x 0, width 1), so OpenSeadragon keeps it aligned. */
"use strict";

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const state = {
  config: null, slides: [], order: [], current: null, detail: null,
  sortKey: "slide_id", sortDir: 1, heatItem: null, heatOn: true, outlines: {},
  pinned: false, rated: new Set(), loading: 0,
};

const viewer = OpenSeadragon({
  id: "osd", prefixUrl: "/static/openseadragon/images/", showNavigator: true,
  navigatorPosition: "BOTTOM_RIGHT", maxZoomPixelRatio: 4, visibilityRatio: 0.5,
  imageLoaderLimit: 8, animationTime: 0.6, drawer: "canvas", gestureSettingsMouse: { clickToZoom: false },
});

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function fmt(v, digits = 3) { return v === null || v === undefined ? "" : Number(v).toFixed(digits); }

/* ---- slide list ---- */
function renderList() {
  const text = $("filter").value.trim().toLowerCase();
  const key = state.sortKey, dir = state.sortDir;
  state.order = state.slides
    .filter((s) => !text || [s.slide_id, s.label, s.predicted_label].join(" ").toLowerCase().includes(text))
    .sort((a, b) => {
      const x = a[key] ?? "", y = b[key] ?? "";
      return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))) * dir;
    });
  const body = $("slides").tBodies[0];
  body.replaceChildren(...state.order.map((s) => {
    const row = document.createElement("tr");
    row.dataset.id = s.slide_id;
    row.classList.toggle("current", s.slide_id === state.current);
    row.classList.toggle("problem", s.problems.length > 0);
    row.classList.toggle("rated", state.rated.has(s.slide_id));
    row.classList.toggle("wrong", s.comparable !== false && !!s.label && !!s.predicted_label && s.label !== s.predicted_label);
    row.title = s.problems.join("\n");
    for (const v of [s.slide_id, s.label, s.predicted_label, fmt(s.probability, 2)]) {
      const cell = document.createElement("td"); cell.textContent = v; row.append(cell);
    }
    row.addEventListener("click", () => openSlide(s.slide_id));
    return row;
  }));
  for (const th of $("slides").tHead.rows[0].cells) {
    if (th.dataset.key === "probability" && state.slides.length && state.slides[0].score_name) {
      th.textContent = state.slides[0].score_name;  // P, P max, risk, or the regression target
    }
    th.classList.toggle("asc", th.dataset.key === key && dir > 0);
    th.classList.toggle("desc", th.dataset.key === key && dir < 0);
  }
}

for (const th of document.querySelectorAll("#slides th")) {
  th.addEventListener("click", () => {
    state.sortDir = state.sortKey === th.dataset.key ? -state.sortDir : 1;
    state.sortKey = th.dataset.key;
    renderList();
  });
}
$("filter").addEventListener("input", renderList);

function step(offset) {
  if (!state.order.length) return;
  const i = state.order.findIndex((s) => s.slide_id === state.current);
  const next = state.order[(i + offset + state.order.length) % state.order.length];
  openSlide(next.slide_id);
}

/* ---- the viewer ---- */
function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
}

async function openSlide(slideId) {
  state.current = slideId;
  state.pinned = false;
  renderList();
  state.heatItem = null; state.outlines = {};
  viewer.close();
  $("measure").textContent = "hover over the slide (click to pin)";
  $("title").textContent = slideId;
  let detail;
  try {
    detail = await getJSON(`/api/slides/${enc(slideId)}`);
  } catch (err) {
    showError(`${slideId}: ${err.message}`); return;
  }
  if (state.current !== slideId) return;
  state.detail = detail;
  const truth = detail.label ? `label ${detail.label} · ` : "";
  const pred = detail.predicted_label ? `predicted ${detail.predicted_label} (${fmt(detail.probability, 3)})` : "no prediction";
  $("title").textContent = `${slideId} — ${truth}${pred}`;
  showError(detail.error ? `${slideId} cannot be shown: ${detail.error}` : "");
  $("osd").style.visibility = detail.error ? "hidden" : "";
  $("layer-error").hidden = !detail.layer_error;
  $("layer-error").textContent = detail.layer_error || "";
  buildLayerMenu(detail.layers);
  loadRating(slideId);
  if (detail.error) return;
  viewer.open({ tileSource: `/slides/${enc(slideId)}.dzi` });
}

viewer.addHandler("open", () => { setHeat(); for (const box of document.querySelectorAll("#outlines input")) setOutline(box); });

function buildLayerMenu(layers) {
  const select = $("heat-layer");
  const heat = layers.filter((l) => l.kind === "heat");
  const previous = select.value;
  select.replaceChildren(...heat.map((l) => new Option(l.label, l.id)));
  if (heat.some((l) => l.id === previous)) select.value = previous;
  select.disabled = heat.length === 0;
  if (!heat.length) select.replaceChildren(new Option("none (no predictions)", ""));
  const outlines = $("outlines");
  const checked = new Set([...outlines.querySelectorAll("input:checked")].map((b) => b.value));
  outlines.replaceChildren(...layers.filter((l) => l.kind === "outline").map((l) => {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox"; box.value = l.id;
    box.checked = checked.has(l.id) || (checked.size === 0 && l.id !== "tissue");
    box.addEventListener("change", () => setOutline(box));
    const swatch = document.createElement("span");
    swatch.textContent = " ■ "; swatch.style.color = l.color;
    label.append(box, swatch, l.label);
    return label;
  }));
  updateColorbar();
}

function layerSource(id) { return `/layers/${enc(state.current)}/${enc(id)}.dzi`; }

function opacity() { return state.heatOn ? Number($("opacity").value) / 100 : 0; }

function setHeat() {
  if (state.heatItem) { viewer.world.removeItem(state.heatItem); state.heatItem = null; }
  const id = $("heat-layer").value;
  if (!id || !viewer.world.getItemCount()) return;
  const slideId = state.current;
  viewer.addTiledImage({
    tileSource: layerSource(id), x: 0, y: 0, width: 1, opacity: opacity(), index: 1,
    success: (e) => {
      if (state.current !== slideId || $("heat-layer").value !== id) { viewer.world.removeItem(e.item); return; }
      state.heatItem = e.item;
    },
  });
  updateColorbar();
}

function setOutline(box) {
  const id = box.value;
  if (state.outlines[id]) { viewer.world.removeItem(state.outlines[id]); delete state.outlines[id]; }
  if (!box.checked || !viewer.world.getItemCount()) return;
  const slideId = state.current;
  viewer.addTiledImage({
    tileSource: layerSource(id), x: 0, y: 0, width: 1, opacity: 1,
    success: (e) => {
      if (state.current !== slideId || !box.checked) { viewer.world.removeItem(e.item); return; }
      state.outlines[id] = e.item;
    },
  });
}

function updateColorbar() {
  const layer = (state.detail?.layers || []).find((l) => l.id === $("heat-layer").value);
  $("colorbar").hidden = !layer;
  // an explanation map: which method, its faithfulness and sanity on this slide
  const trust = layer && layer.trust;
  $("trust").hidden = !trust;
  $("trust").textContent = trust ? trust.caption : "";
  $("trust").classList.toggle("fails", !!(trust && trust.fails_sanity));
  if (!layer) return;
  $("colorbar-ramp").style.background = `linear-gradient(to right, ${state.config.colorbar.join(", ")})`;
  $("cb-min").textContent = fmt(layer.vmin, 2);
  $("cb-max").textContent = fmt(layer.vmax, 2);
  $("cb-label").textContent = layer.label;
}

function applyOpacity() {
  $("opacity-value").textContent = state.heatOn ? `${$("opacity").value} %` : "off";
  if (state.heatItem) state.heatItem.setOpacity(opacity());
}

$("heat-layer").addEventListener("change", setHeat);
$("opacity").addEventListener("input", applyOpacity);

/* ---- tile measurements ---- */
let measureTimer = null;
function measureAt(position, pin) {
  if (!state.current || !viewer.world.getItemCount() || (state.pinned && !pin)) return;
  const point = viewer.world.getItemAt(0).viewerElementToImageCoordinates(position);
  clearTimeout(measureTimer);
  measureTimer = setTimeout(async () => {
    const slideId = state.current;
    const m = await getJSON(`/api/slides/${enc(slideId)}/at?x=${point.x.toFixed(1)}&y=${point.y.toFixed(1)}`).catch(() => null);
    if (!m || slideId !== state.current) return;
    showMeasure(m, point);
  }, pin ? 0 : 80);
}

function showMeasure(m, point) {
  const box = $("measure");
  if (m.tile === null) {
    box.textContent = `no tile at (${Math.round(point.x)}, ${Math.round(point.y)})`;
    return;
  }
  const rows = [["tile", `#${m.tile} at (${m.x}, ${m.y}), ${Math.round(m.size)} px`],
    ["attention", fmt(m.attention, 4)], ["percentile", `${fmt(100 * m.percentile, 1)} %`]];
  for (const [c, p] of Object.entries(m.probs)) rows.push([`P(${c})`, fmt(p, 3)]);
  for (const [e, v] of Object.entries(m.explanations)) rows.push([e, fmt(v, 4)]);
  const table = document.createElement("table");
  for (const [k, v] of rows) {
    const tr = table.insertRow();
    tr.insertCell().textContent = k; tr.insertCell().textContent = v;
  }
  box.replaceChildren(table);
  if (state.pinned) box.append(Object.assign(document.createElement("p"), { className: "muted", textContent: "pinned (click again to unpin)" }));
}

new OpenSeadragon.MouseTracker({ element: viewer.canvas, moveHandler: (e) => measureAt(e.position, false) });
viewer.addHandler("canvas-click", (e) => {
  if (!e.quick) return;
  state.pinned = !state.pinned;
  if (state.pinned) measureAt(e.position, true);
});

/* ---- ratings ---- */
function buildRatingForm() {
  const form = $("rating");
  const disabled = !state.config.rater;
  const parts = state.config.questions.map(([key, text]) => {
    const div = document.createElement("div");
    div.className = "question";
    div.append(Object.assign(document.createElement("div"), { textContent: text }));
    const scores = document.createElement("div");
    scores.className = "scores";
    for (let v = 1; v <= 5; v++) {
      const label = document.createElement("label");
      const radio = Object.assign(document.createElement("input"), { type: "radio", name: key, value: v, disabled });
      label.append(radio, ` ${v}`);
      scores.append(label);
    }
    div.append(scores);
    return div;
  });
  const comment = Object.assign(document.createElement("textarea"), { name: "comment", disabled, placeholder: "comment (optional)" });
  const button = Object.assign(document.createElement("button"), { type: "submit", textContent: "Save rating", disabled });
  form.replaceChildren(...parts, comment, button);
  $("rating-status").textContent = disabled
    ? "read-only: start wsi-mil view with --rater NAME to rate"
    : `rater: ${state.config.rater} (1 = no / not at all, 5 = fully)`;
}

async function loadRating(slideId) {
  const form = $("rating");
  form.reset();
  if (!state.config.rater) return;
  const data = await getJSON(`/api/slides/${enc(slideId)}/rating`).catch(() => null);
  if (!data || slideId !== state.current) return;
  const rating = data.rating;
  $("rating-status").textContent = rating ? `saved ${rating.submitted}` : `not rated yet by ${state.config.rater}`;
  if (!rating) return;
  for (const [key] of state.config.questions) {
    const radio = form.querySelector(`input[name="${key}"][value="${rating[key]}"]`);
    if (radio) radio.checked = true;
  }
  form.elements.comment.value = rating.comment || "";
}

$("rating").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = $("rating"), body = { comment: form.elements.comment.value };
  for (const [key] of state.config.questions) {
    const checked = form.querySelector(`input[name="${key}"]:checked`);
    if (!checked) { $("rating-status").textContent = "answer all four questions (1-5)"; return; }
    body[key] = Number(checked.value);
  }
  const slideId = state.current;
  try {
    const saved = await getJSON(`/api/slides/${enc(slideId)}/rating`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    state.rated.add(slideId);
    $("rating-status").textContent = `saved to ratings/${saved.file} (${saved.count} slides rated)`;
    renderList();
  } catch (err) {
    $("rating-status").textContent = `not saved: ${err.message}`;
  }
});

/* ---- keyboard ---- */
document.addEventListener("keydown", (event) => {
  if (event.target.closest("input, textarea, select") || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "n" || event.key === "j") step(1);
  else if (event.key === "p" || event.key === "k") step(-1);
  else if (event.key === "h") { state.heatOn = !state.heatOn; applyOpacity(); }
  else return;
  event.preventDefault();
});

/* ---- for tests and scripts: whether every layer has drawn its tiles ---- */
window.wsiViewer = {
  viewer, state,
  isDrawn() {
    const n = viewer.world.getItemCount(), vp = viewer.viewport;
    if (!n || !vp) return false;
    const still = Math.abs(vp.getZoom(true) - vp.getZoom(false)) < 1e-9 * vp.getZoom(false)
      && vp.getCenter(true).distanceTo(vp.getCenter(false)) < 1e-9;
    if (!still) return false;
    for (let i = 0; i < n; i++) if (!viewer.world.getItemAt(i).getFullyLoaded()) return false;
    return state.heatItem !== null || !$("heat-layer").value;
  },
};

(async function start() {
  try {
    state.config = await getJSON("/api/config");
    state.slides = await getJSON("/api/slides");
  } catch (err) { showError(`cannot load the project: ${err.message}`); return; }
  state.rated = new Set(state.config.rated);
  buildRatingForm();
  renderList();
  const first = new URLSearchParams(location.search).get("slide");
  const start = state.slides.find((s) => s.slide_id === first) || state.order[0];
  if (start) openSlide(start.slide_id);
})();
