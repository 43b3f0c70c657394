// The poem studio's page: each tab calls the JSON API of the same server and lays out what comes back.
"use strict";

const $ = (id) => document.getElementById(id);
let lastPoems = [];
let mapData = null;

async function api(path, body) {
  const response = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({error: `the server answered ${response.status}`}));
  if (!response.ok) throw new Error(answer.error || `the server answered ${response.status}`);
  return answer;
}

function showError(error) {
  const box = $("error");
  box.textContent = error ? String(error.message || error) : "";
  box.hidden = !error;
}

async function run(button, work) {
  showError(null);
  button.disabled = true;
  try {
    await work();
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
}

function number(id) {
  const value = $(id).value.trim();
  return value === "" ? null : Number(value);
}

// a poem as lines: each line keeps its closing mark (，。？！；); free text stays one line
function poemLines(text) {
  return text.match(/[^，。？！；]+[，。？！；]?/g) || [text];
}

function poemElement(text) {
  const box = document.createElement("div");
  box.className = "poem";
  for (const line of poemLines(text)) {
    const row = document.createElement("div");
    row.className = "line";
    row.textContent = line;
    box.appendChild(row);
  }
  const copy = document.createElement("button");
  copy.className = "copy";
  copy.type = "button";
  copy.textContent = "copy";
  copy.addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText(text));
  box.appendChild(copy);
  return box;
}

function showPoems(container, poems) {
  container.replaceChildren(...poems.map(poemElement));
}

function showWarnings(answer) {
  if (answer.warnings && answer.warnings.length) showError(answer.warnings.join("; "));
}

// --- tabs and models ---------------------------------------------------------------------------------

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    document.querySelectorAll(".tab, .panel").forEach((el) => el.classList.remove("active"));
    tab.classList.add("active");
    $(tab.dataset.tab).classList.add("active");
    if (tab.dataset.tab === "map") loadMap();
    if (tab.dataset.tab === "card") loadCard();
  });
}

let cards = [];
async function loadModels() {
  try {
    cards = (await api("/api/models")).models;
    $("model").replaceChildren(...cards.map((card) => new Option(card.name, card.name)));
  } catch (error) {
    showError(error);
  }
}
$("model").addEventListener("change", () => {
  mapData = null;
  if ($("map").classList.contains("active")) loadMap();
  if ($("card").classList.contains("active")) loadCard();
});

// --- write ---------------------------------------------------------------------------------------------

$("write-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run($("write-button"), async () => {
    const answer = await api("/api/sample", {
      model: $("model").value || null, form: $("form").value || null, n: number("count"),
      rhyme: $("rhyme").checked, meter: $("meter").checked, acrostic: $("acrostic").value.trim(),
      temperature: number("temperature"), top_p: number("top-p"), seed: number("seed"),
    });
    lastPoems = answer.poems;
    showPoems($("poems"), answer.poems);
    showWarnings(answer);
  });
});

// --- reconstruct / vary --------------------------------------------------------------------------------

$("edit-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run($("reconstruct-button"), async () => {
    const answer = await api("/api/reconstruct", {
      model: $("model").value || null, text: $("source").value.trim(), variations: number("variations") || 0,
      spread: number("spread") || 1, seed: number("edit-seed"),
    });
    showPoems($("input-poem"), [$("source").value.trim()]);
    showPoems($("reconstruction"), [answer.reconstruction]);
    showPoems($("variations-out"), answer.variations);
    showWarnings(answer);
  });
});

// --- interpolate ---------------------------------------------------------------------------------------

$("interpolate-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run($("interpolate-button"), async () => {
    const answer = await api("/api/interpolate", {
      model: $("model").value || null, a: $("poem-a").value.trim(), b: $("poem-b").value.trim(),
      steps: number("steps"), seed: 0,
    });
    $("path").replaceChildren(...answer.path.map((text, i) => {
      const step = document.createElement("li");
      step.className = "step";
      const t = document.createElement("span");
      t.className = "t";
      t.textContent = `t = ${(i / (answer.path.length - 1)).toFixed(2)}`;
      step.append(t, poemElement(text));
      return step;
    }));
    showWarnings(answer);
  });
});

// --- latent map ----------------------------------------------------------------------------------------

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"];
const SVG = "http://www.w3.org/2000/svg";

function svgElement(name, attributes) {
  const el = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, value);
  return el;
}

function scales(points) {
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const pad = 30;
  return (p) => [pad + (p[0] - x0) / (x1 - x0 || 1) * (640 - 2 * pad),
                 480 - pad - (p[1] - y0) / (y1 - y0 || 1) * (480 - 2 * pad)];
}

function drawMap(placed) {
  const plot = $("map-plot");
  plot.replaceChildren();
  if (!mapData) return;
  const labels = mapData.labels[$("colour").value] || mapData.labels.form;
  const kinds = [...new Set(labels)].sort();
  const scale = scales(mapData.points.concat(placed.map((p) => p.point)));
  mapData.points.forEach((point, i) => {
    const [x, y] = scale(point);
    const dot = svgElement("circle", {cx: x, cy: y, r: 2.2, fill: PALETTE[kinds.indexOf(labels[i]) % PALETTE.length],
                                      "fill-opacity": 0.55});
    dot.addEventListener("mouseenter", () => { $("map-hover").textContent = mapData.texts[i]; });
    plot.appendChild(dot);
  });
  kinds.forEach((kind, i) => {
    plot.appendChild(svgElement("rect", {x: 560, y: 12 + 16 * i, width: 10, height: 10, fill: PALETTE[i % PALETTE.length]}));
    const text = svgElement("text", {x: 576, y: 21 + 16 * i, "font-size": 11});
    text.textContent = kind;
    plot.appendChild(text);
  });
  for (const {point, text} of placed) {
    const [x, y] = scale(point);
    const star = svgElement("path", {d: `M${x} ${y - 7} L${x + 6} ${y + 5} L${x - 7} ${y - 2} L${x + 7} ${y - 2} L${x - 6} ${y + 5} Z`,
                                     fill: "#000", class: "placed"});
    star.addEventListener("mouseenter", () => { $("map-hover").textContent = text; });
    plot.appendChild(star);
  }
}

let placed = [];
async function loadMap() {
  if (mapData) return;
  run($("place-button"), async () => {
    $("map-note").textContent = "encoding the test split…";
    mapData = await api(`/api/latent-map?model=${encodeURIComponent($("model").value)}`);
    const [a, b] = mapData.explained.map((v) => (100 * v).toFixed(1));
    $("map-note").textContent = `${mapData.points.length} test poems, posterior means projected on their first two ` +
      `principal axes (${a} % and ${b} % of the variance); hover a point to read it; ★ are the placed poems`;
    placed = [];
    drawMap(placed);
  });
}
$("colour").addEventListener("change", () => drawMap(placed));
$("place-button").addEventListener("click", () => run($("place-button"), async () => {
  if (!mapData) await loadMap();
  const texts = $("place").value.split("\n").map((t) => t.trim()).filter(Boolean).concat(lastPoems);
  if (!texts.length) return;
  const answer = await api("/api/project", {model: $("model").value || null, texts});
  placed = answer.points.map((point, i) => ({point, text: texts[i]}));
  drawMap(placed);
}));

// --- model card ----------------------------------------------------------------------------------------

function bars(svg, values) {
  svg.replaceChildren();
  if (!values) return;
  const top = Math.max(...values, 1e-9), width = 300 / values.length;
  values.forEach((v, i) => {
    const h = 130 * v / top;
    svg.appendChild(svgElement("rect", {x: 10 + i * width, y: 140 - h, width: Math.max(1, width - 1), height: h, fill: "#1f77b4"}));
  });
  const label = svgElement("text", {x: 10, y: 156, "font-size": 10});
  label.textContent = `max ${top.toFixed(2)}, ${values.length} dimensions`;
  svg.appendChild(label);
}

function loadCard() {
  const card = cards.find((c) => c.name === $("model").value) || cards[0];
  if (!card) return;
  const e = card.eval || {};
  const fmt = (v, digits = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
  const rows = [
    ["model", card.name], ["posterior", `${card.posterior}, D = ${card.latent_dim}`], ["decoder", card.decoder],
    ["parameters", card.parameters.toLocaleString()], ["aggregate prior", card.aggregate_prior ? "yes" : "no"],
    [e.iw_estimator || "IW-NLL", `${fmt(e.iw_nll)} nats per text`], ["−ELBO", fmt(e.elbo === undefined ? null : -e.elbo)],
    ["KL", `${fmt(e.kl)} nats`], ["MI", `${fmt(e.mi)} nats`],
    ["active units", e.active_units === undefined ? "–" : `${e.active_units} / ${card.latent_dim}`],
    ["scored on", e.examples ? `${e.examples.toLocaleString()} test texts (eval.json)` : "no eval.json"],
  ];
  $("card-table").replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement("tr");
    const th = document.createElement("th"), td = document.createElement("td");
    th.textContent = k;
    td.textContent = v;
    tr.append(th, td);
    return tr;
  }));
  bars($("kl-chart"), e.kl_per_dim);
  bars($("var-chart"), e.variance_per_dim);
}

loadModels();
