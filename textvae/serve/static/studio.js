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
  copy.textContent = t("copy");
  copy.dataset.i18n = "copy";
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
    showError(null);  // a message belongs to the tab it came from
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
    fillPriors();
    fillStyle();
  } catch (error) {
    showError(error);
  }
}
// --- language and output script -------------------------------------------------------------------------

// the output script follows the language until the user picks one: 简体 pages write simplified poems
const SCRIPT_OF = {"zh-Hant": "", "zh-Hans": "simplified"};
function script() {
  return $("script").value || null;
}
$("language").value = language;
$("script").value = localStorage.getItem("textvae-script") ?? SCRIPT_OF[language] ?? "";
applyLanguage(language);
$("language").addEventListener("change", () => {
  applyLanguage($("language").value);
  fillPriors();
  fillStyle();
  if (localStorage.getItem("textvae-script") === null && language in SCRIPT_OF) $("script").value = SCRIPT_OF[language];
  if ($("map").classList.contains("active")) {
    showMapNote();
    drawMap(placed);
  }
  if ($("card").classList.contains("active")) loadCard();
});
$("script").addEventListener("change", () => localStorage.setItem("textvae-script", $("script").value));

// where z comes from: auto (the model's default learned prior), the standard prior, or each kind it has fitted
function fillPriors() {
  const card = currentCard();
  if (!card) return;
  const chosen = $("prior").value;
  const auto = t("auto prior", {kind: t(card.default_prior || "standard")});
  const kinds = ["standard", ...card.priors];
  $("prior").replaceChildren(new Option(auto, "auto"), ...kinds.map((kind) => new Option(t(kind), kind)));
  $("prior").value = ["auto", ...kinds].includes(chosen) ? chosen : "auto";
  fillPaths(card);
}

// how a path walks: through the two poems' crossings, the straight line, spherical interpolation, or (with a flow
// or diffusion prior) the prior's own coordinates
function fillPaths(card) {
  const chosen = $("path-kind").value;
  const walkable = card.priors.some((k) => k === "flow" || k === "diffusion");
  const kinds = ["crossings", "linear", "slerp", ...(walkable ? ["prior"] : [])];
  $("path-kind").replaceChildren(...kinds.map((kind) => new Option(t("path " + kind), kind)));
  $("path-kind").value = kinds.includes(chosen) ? chosen : card.default_path;
}

// the poets, eras and themes the model's attribute models know, in both tabs' menus; the Write tab's Style group
// shows only where it has them (keywords need none), and the Restyle tab says what it lacks
function fillStyle() {
  const card = currentCard();
  if (!card) return;
  const known = card.attributes || {authors: [], eras: [], themes: []};
  $("poets").replaceChildren(...known.authors.map((poet) => new Option(poet)));
  for (const [id, values] of [["era", known.eras], ["theme", known.themes], ["restyle-era", known.eras],
                              ["restyle-theme", known.themes]]) {
    const chosen = $(id).value;
    $(id).replaceChildren(new Option(t("any"), ""), ...values.map((value) => new Option(t(value), value)));
    $(id).value = values.includes(chosen) ? chosen : "";
  }
  $("style").hidden = !card.attributes;
  $("restyle-button").disabled = !card.attributes;
  $("restyle-note").textContent = card.attributes ? "" : t("restyle needs attributes");
}

// the steering fields from a tab's poet, era, theme and strength controls (no strength: the server's default)
function steering(prefix) {
  return {like: $(prefix + "like").value.trim(), era: $(prefix + "era").value, theme: $(prefix + "theme").value,
          strength: number(prefix + "strength") ?? undefined};
}

$("model").addEventListener("change", () => {
  fillPriors();
  fillStyle();
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
      temperature: number("temperature"), top_p: number("top-p"), seed: number("seed"), script: script(),
      prior: $("prior").value || "auto", keywords: $("keywords").value.trim(),
      ...($("style").hidden ? {} : steering("")),
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
      model: $("model").value || null, text: $("source").value.trim(), n: number("variations") || 0,
      spread: number("spread") || 0.5, seed: number("edit-seed"), script: script(),
    });
    showPoems($("input-poem"), [$("source").value.trim()]);
    showPoems($("reconstruction"), [answer.reconstruction]);
    showPoems($("variations-out"), answer.variations);
    showWarnings(answer);
  });
});

// --- restyle -------------------------------------------------------------------------------------------

$("restyle-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run($("restyle-button"), async () => {
    const text = $("restyle-source").value.trim();
    const answer = await api("/api/restyle", {
      model: $("model").value || null, text, seed: 0, script: script(), ...steering("restyle-"),
    });
    showPoems($("restyle-input"), [text]);
    showPoems($("restyled"), [answer.restyled]);
    $("kept").textContent = `${(100 * answer.kept).toFixed(0)} %`;
    $("kept-line").hidden = false;
    showWarnings(answer);
  });
});

// --- interpolate ---------------------------------------------------------------------------------------

$("interpolate-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run($("interpolate-button"), async () => {
    const answer = await api("/api/interpolate", {
      model: $("model").value || null, a: $("poem-a").value.trim(), b: $("poem-b").value.trim(),
      steps: number("steps"), seed: 0, script: script(), path: $("path-kind").value || undefined,
    });
    $("path").replaceChildren(...answer.path.map((text, i) => {
      const step = document.createElement("li");
      step.className = "step";
      const label = document.createElement("span");
      label.className = "t";
      label.textContent = `t = ${(i / (answer.path.length - 1)).toFixed(2)}`;
      step.append(label, poemElement(text));
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
    text.textContent = t(kind);  // forms and dynasties in the page's language
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

function currentCard() {
  return cards.find((c) => c.name === $("model").value) || cards[0];
}

function showMapNote() {
  const card = currentCard();
  if (card && !card.latent_map) {
    $("map-note").textContent = t("map needs data");
  } else if (mapData) {
    const [a, b] = mapData.explained.map((v) => (100 * v).toFixed(1));
    $("map-note").textContent = t("map summary", {n: mapData.points.length, a, b});
  }
}

let placed = [];
async function loadMap() {
  const card = currentCard();
  $("place-button").disabled = Boolean(card && !card.latent_map);
  if (mapData || (card && !card.latent_map)) return showMapNote();
  await run($("place-button"), async () => {
    $("map-note").textContent = t("encoding");
    mapData = await api(`/api/latent-map?model=${encodeURIComponent($("model").value)}`);
    showMapNote();
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
  label.textContent = t("dimensions", {max: top.toFixed(2), n: values.length});
  svg.appendChild(label);
}

function loadCard() {
  const card = currentCard();
  if (!card) return;
  const e = card.eval || {};
  const fmt = (v, digits = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
  const rows = [
    [t("model"), card.name], [t("posterior"), `${card.posterior}, D = ${card.latent_dim}`], [t("decoder"), card.decoder],
    [t("parameters"), card.parameters.toLocaleString()], 
    [t("learned priors"), card.priors.length ? card.priors.map((k) => t(k) + (k === card.default_prior ? t("(default)") : "")).join("、") : t("none")],
    [e.iw_estimator || "IW-NLL", `${fmt(e.iw_nll)} ${t("nats per text")}`],
    ["−ELBO", fmt(e.elbo === undefined ? null : -e.elbo)],
    ["KL", `${fmt(e.kl)} ${t("nats")}`], ["MI", `${fmt(e.mi)} ${t("nats")}`],
    [t("active units"), e.active_units === undefined ? "–" : `${e.active_units} / ${card.latent_dim}`],
    [t("scored on"), e.examples ? t("test texts", {n: e.examples.toLocaleString()}) : t("no eval.json")],
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
