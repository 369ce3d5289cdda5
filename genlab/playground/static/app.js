// genlab playground page: plain JS and canvas, no libraries, nothing fetched from elsewhere.
// It polls GET /api/runs/<id> several times a second and draws the run's latest snapshot.
"use strict";

const POLL_MS = 250;
const STEP_N = 10;
const $ = (id) => document.getElementById(id);

const state = {
  options: null,
  runId: null,
  run: null,
  polling: false,
  busy: false,
  runError: false,
};

// --------------------------------------------------------------------------------- API
async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  let data = null;
  try {
    data = await res.json();
  } catch (e) {
    data = null;
  }
  if (!res.ok) {
    const msg = data && data.error ? data.error : `${res.status} ${res.statusText}`;
    const err = new Error(msg);
    err.status = res.status;
    throw err;
  }
  return data;
}

function showError(text) {
  const el = $("error");
  el.textContent = text || "";
  el.hidden = !text;
}

// ----------------------------------------------------------------------------- options
async function loadOptions() {
  state.options = await api("GET", "/api/options");
  const ds = $("dataset");
  for (const d of state.options.datasets) {
    ds.add(new Option(d.name, d.name));
  }
  ds.value = "ring8";
  const ms = $("model");
  for (const m of state.options.models) {
    ms.add(new Option(`${m.name} (${m.kind})`, m.name));
  }
  ms.value = state.options.models.some((m) => m.name === "gan") ? "gan" : ms.options[0].value;
  renderParams();
  ms.addEventListener("change", renderParams);
}

function modelOption(name) {
  return state.options.models.find((m) => m.name === name);
}

function fieldInput(p) {
  const label = document.createElement("label");
  label.textContent = p.key.split(".")[1] + " ";
  let input;
  if (p.type === "choice") {
    input = document.createElement("select");
    for (const c of p.choices) input.add(new Option(String(c), String(c)));
    input.value = String(p.default);
  } else if (p.type === "bool") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = !!p.default;
  } else if (p.type === "ints") {
    input = document.createElement("input");
    input.type = "text";
    input.className = "wide";
    input.value = p.default.join(",");
  } else {
    input = document.createElement("input");
    input.type = "text";
    input.value = String(p.default);
  }
  input.dataset.key = p.key;
  input.dataset.type = p.type;
  input.dataset.default = JSON.stringify(p.default);
  label.appendChild(input);
  return label;
}

function renderParams() {
  const m = modelOption($("model").value);
  $("model-desc").textContent = m ? m.description : "";
  const box = $("params");
  box.replaceChildren();
  for (const p of m ? m.params : []) box.appendChild(fieldInput(p));
  const tbox = $("train-params");
  if (!tbox.childElementCount) {
    for (const p of state.options.train) tbox.appendChild(fieldInput(p));
  }
}

function readInput(input) {
  const t = input.dataset.type;
  if (t === "bool") return input.checked;
  if (t === "choice") {
    const choices = modelChoices(input);
    return choices.find((c) => String(c) === input.value);
  }
  const text = input.value.trim();
  if (t === "ints") {
    return text === "" ? [] : text.split(",").map((v) => (v.trim() === "" ? v : Number(v)));
  }
  if (t === "int" || t === "float") {
    const v = Number(text);
    return text !== "" && Number.isFinite(v) ? v : text; // the server names a bad value
  }
  return text;
}

function modelChoices(input) {
  const all = [...state.options.models.flatMap((m) => m.params), ...state.options.train];
  const p = all.find((q) => q.key === input.dataset.key && q.choices);
  return p ? p.choices : [];
}

function overrides() {
  const out = {};
  for (const input of document.querySelectorAll("#params [data-key], #train-params [data-key]")) {
    const value = readInput(input);
    if (JSON.stringify(value) !== input.dataset.default) out[input.dataset.key] = value;
  }
  return out;
}

// -------------------------------------------------------------------------------- runs
async function createRun() {
  showError("");
  const old = state.runId;
  state.runId = null;
  state.run = null;
  if (old) {
    try {
      await api("DELETE", `/api/runs/${old}`);
    } catch (e) {
      /* already gone */
    }
  }
  setBusy(true);
  try {
    const run = await api("POST", "/api/runs", {
      dataset: $("dataset").value,
      model: $("model").value,
      overrides: overrides(),
    });
    state.runId = run.id;
    update(run);
  } catch (e) {
    showError(e.message);
    update(null);
  } finally {
    setBusy(false);
  }
}

async function action(name, body) {
  if (!state.runId) return;
  showError("");
  setBusy(true);
  try {
    update(await api("POST", `/api/runs/${state.runId}/${name}`, body || {}));
  } catch (e) {
    showError(e.message);
  } finally {
    setBusy(false);
  }
}

function setBusy(b) {
  state.busy = b;
  updateButtons();
}

function updateButtons() {
  const run = state.run;
  const s = run ? run.state : "none";
  const trainable = run && run.trainable && s !== "error" && s !== "done";
  $("create").disabled = state.busy;
  $("start").disabled = state.busy || !trainable || s === "running";
  $("pause").disabled = state.busy || s !== "running";
  $("step").disabled = state.busy || !trainable;
  $("reset").disabled = state.busy || !run;
}

async function poll() {
  if (state.polling || !state.runId || state.busy) return;
  state.polling = true;
  const id = state.runId;
  try {
    const run = await api("GET", `/api/runs/${id}`);
    if (id === state.runId) update(run);
  } catch (e) {
    if (id === state.runId) {
      showError(e.message);
      if (e.status === 404) {
        state.runId = null;
        update(null);
      }
    }
  } finally {
    state.polling = false;
  }
}

function update(run) {
  state.run = run;
  $("state").textContent = run ? run.state : "none";
  $("step-count").textContent = run ? String(run.step) : "0";
  $("kind").textContent = run ? run.kind : "-";
  // a run's own error stays while the run is in error; request errors stay until the next action
  if (run && run.error) {
    showError(run.error);
    state.runError = true;
  } else if (state.runError) {
    showError("");
    state.runError = false;
  }
  updateButtons();
  updateView(run);
  drawAll(run);
}

function updateView(run) {
  const box = $("view");
  const show = !!(run && run.kind === "score" && run.samplers.length);
  box.hidden = !show;
  if (!show) return;
  const sel = $("view-sampler");
  const names = run.samplers.join(",");
  if (sel.dataset.names !== names) {
    sel.replaceChildren();
    for (const s of run.samplers) sel.add(new Option(s, s));
    sel.dataset.names = names;
  }
  if (document.activeElement !== sel) sel.value = run.view.sampler;
  const steps = $("view-steps");
  if (document.activeElement !== steps) steps.value = run.view.steps;
  const noise = $("view-noise");
  if (document.activeElement !== noise) noise.value = run.view.noise;
  const pic = run.snapshot && run.snapshot.picture;
  $("view-level").textContent = pic && pic.level ? `${pic.level} · ${pic.sampler}` : "";
}

// ---------------------------------------------------------------------------- drawing
function frame(bounds, x0, y0, w, h) {
  const [bx0, bx1, by0, by1] = bounds;
  return {
    x: (v) => x0 + ((v - bx0) / (bx1 - bx0)) * w,
    y: (v) => y0 + (1 - (v - by0) / (by1 - by0)) * h,
    x0, y0, w, h,
  };
}

function dots(ctx, f, pts, color, r) {
  ctx.fillStyle = color;
  for (const p of pts) {
    if (!p || p[0] === null || p[1] === null) continue;
    ctx.fillRect(f.x(p[0]) - r / 2, f.y(p[1]) - r / 2, r, r);
  }
}

function polyline(ctx, f, line, color, width) {
  ctx.strokeStyle = color;
  ctx.lineWidth = width;
  ctx.beginPath();
  let pen = false;
  for (const p of line) {
    if (!p || p[0] === null || p[1] === null) {
      pen = false;
      continue;
    }
    if (pen) ctx.lineTo(f.x(p[0]), f.y(p[1]));
    else ctx.moveTo(f.x(p[0]), f.y(p[1]));
    pen = true;
  }
  ctx.stroke();
}

function clip(ctx, f) {
  ctx.save();
  ctx.beginPath();
  ctx.rect(f.x0, f.y0, f.w, f.h);
  ctx.clip();
}

function hueOf(p, bounds) {
  const cx = (bounds[0] + bounds[1]) / 2;
  const cy = (bounds[2] + bounds[3]) / 2;
  const a = Math.atan2(p[1] - cy, p[0] - cx);
  return Math.round(((a + Math.PI) / (2 * Math.PI)) * 360);
}

// colour maps: t in [0, 1]
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const DIVERGING = [[118, 42, 131], [194, 165, 207], [247, 247, 247], [166, 219, 160], [27, 120, 55]];
function ramp(stops, t) {
  t = Math.min(1, Math.max(0, t));
  const s = t * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(s));
  const u = s - i;
  const c = stops[i].map((v, k) => Math.round(v + u * (stops[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function heatmap(ctx, f, grid, colorOf) {
  const side = grid.side;
  const cw = f.w / side;
  const ch = f.h / side;
  for (let r = 0; r < side; r++) {
    for (let c = 0; c < side; c++) {
      const v = grid.values[r][c];
      ctx.fillStyle = v === null ? "#ccc" : colorOf(v);
      ctx.fillRect(f.x0 + c * cw, f.y0 + r * ch, Math.ceil(cw), Math.ceil(ch));
    }
  }
}

function clear(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  return ctx;
}

function label(ctx, text, x, y) {
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillStyle = "rgba(255,255,255,0.8)";
  ctx.fillRect(x - 2, y - 12, ctx.measureText(text).width + 4, 16);
  ctx.fillStyle = "#222";
  ctx.fillText(text, x, y);
}

function drawAll(run) {
  drawPoints(run);
  drawPicture(run);
  drawLosses(run);
  drawMetrics(run);
}

function drawPoints(run) {
  const canvas = $("points");
  const ctx = clear(canvas);
  if (!run) return;
  const f = frame(run.bounds, 0, 0, canvas.width, canvas.height);
  clip(ctx, f);
  dots(ctx, f, run.real, "rgba(90,90,90,0.55)", 3);
  if (run.snapshot) dots(ctx, f, run.snapshot.generated, "rgba(230,110,0,0.85)", 3);
  ctx.restore();
  label(ctx, `step ${run.snapshot ? run.snapshot.step : 0}`, 6, 16);
}

function drawPicture(run) {
  const canvas = $("picture");
  const ctx = clear(canvas);
  const pic = run && run.snapshot && run.snapshot.picture;
  $("picture-title").textContent = pic ? pic.title : "family picture";
  $("picture-caption").textContent = pic && pic.equation ? `${pic.equation}   [${pic.source}]` : "";
  if (!pic) return;
  const half = canvas.width / 2;
  const left = frame(run.bounds, 0, 0, half - 4, canvas.height);
  const right = frame(run.bounds, half + 4, 0, half - 4, canvas.height);
  const gen = run.snapshot.generated;
  if (pic.kind === "critic") {
    const vals = pic.grid.values.flat().filter((v) => v !== null);
    let lo = 0;
    let hi = 1;
    if (!pic.probability && vals.length) {
      lo = Math.min(...vals);
      hi = Math.max(...vals);
      if (hi - lo < 1e-9) hi = lo + 1;
    }
    clip(ctx, left);
    heatmap(ctx, left, pic.grid, (v) => ramp(DIVERGING, (v - lo) / (hi - lo)));
    dots(ctx, left, run.real, "rgba(20,90,30,0.7)", 3);
    dots(ctx, left, gen, "rgba(110,20,120,0.8)", 3);
    ctx.restore();
    label(ctx, `${pic.value_label}: purple = fake, green = real`, 6, 16);
    clip(ctx, right);
    dots(ctx, right, run.real, "rgba(90,90,90,0.35)", 3);
    pic.lines.forEach((line, i) => {
      const hue = i < pic.lines.length / 2 ? 210 : 20;
      polyline(ctx, right, line, `hsla(${hue},70%,45%,0.8)`, 1.2);
    });
    ctx.restore();
    label(ctx, "G maps a latent grid (z1, z2 in [-2.5, 2.5])", half + 10, 16);
  } else if (pic.kind === "density") {
    const vals = pic.grid.values.flat().filter((v) => v !== null);
    const top = vals.length ? Math.max(...vals) : 1;
    clip(ctx, left);
    heatmap(ctx, left, pic.grid, (v) => ramp(VIRIDIS, Math.sqrt(v / (top || 1))));
    ctx.restore();
    label(ctx, "p(x), sqrt colour scale", 6, 16);
    clip(ctx, right);
    heatmap(ctx, right, pic.grid, (v) => ramp(VIRIDIS, Math.sqrt(v / (top || 1)) * 0.35));
    dots(ctx, right, gen, "rgba(255,140,0,0.9)", 3);
    ctx.restore();
    label(ctx, `samples over p(x); mass in view ${fmt(pic.mass_in_view)}`, half + 10, 16);
  } else if (pic.kind === "latent") {
    const lf = frame(pic.latent_bounds, 0, 0, half - 4, canvas.height);
    clip(ctx, lf);
    pic.latent_lines.forEach((line) => polyline(ctx, lf, line, "rgba(0,0,0,0.12)", 1));
    pic.latent.forEach((z, i) => {
      const p = run.real[i];
      if (p) dots(ctx, lf, [z], `hsla(${hueOf(p, run.bounds)},80%,45%,0.85)`, 4);
    });
    ctx.restore();
    label(ctx, `latent space z = encode(x) (dim ${pic.latent_dim}; colour = position of x)`, 6, 16);
    clip(ctx, right);
    run.real.forEach((p) => dots(ctx, right, [p], `hsla(${hueOf(p, run.bounds)},80%,45%,0.5)`, 3));
    pic.lines.forEach((line, i) => {
      const hue = i < pic.lines.length / 2 ? 210 : 20;
      polyline(ctx, right, line, `hsla(${hue},70%,40%,0.8)`, 1.2);
    });
    ctx.restore();
    label(ctx, "decoder maps the latent grid: x = decode(z)", half + 10, 16);
  } else if (pic.kind === "score") {
    clip(ctx, left);
    dots(ctx, left, run.real, "rgba(90,90,90,0.35)", 3);
    const cell = (left.w / pic.arrow_side) * 0.9;
    ctx.strokeStyle = "rgba(200,30,30,0.85)";
    ctx.lineWidth = 1.2;
    for (const a of pic.arrows) {
      if (a.some((v) => v === null)) continue;
      const x = left.x(a[0]);
      const y = left.y(a[1]);
      const dx = a[2] * cell;
      const dy = -a[3] * cell;
      ctx.beginPath();
      ctx.moveTo(x, y);
      ctx.lineTo(x + dx, y + dy);
      const ang = Math.atan2(dy, dx);
      const head = Math.min(4, Math.hypot(dx, dy) * 0.4);
      ctx.lineTo(x + dx - head * Math.cos(ang - 0.5), y + dy - head * Math.sin(ang - 0.5));
      ctx.moveTo(x + dx, y + dy);
      ctx.lineTo(x + dx - head * Math.cos(ang + 0.5), y + dy - head * Math.sin(ang + 0.5));
      ctx.stroke();
    }
    ctx.restore();
    label(ctx, `score s(x, sigma) at ${pic.level}`, 6, 16);
    clip(ctx, right);
    dots(ctx, right, run.real, "rgba(90,90,90,0.35)", 3);
    dots(ctx, right, gen, "rgba(230,110,0,0.5)", 2);
    pic.paths.forEach((path, i) => {
      polyline(ctx, right, path, `hsla(${(i * 47) % 360},75%,40%,0.85)`, 1.2);
      const end = path[path.length - 1];
      if (end) dots(ctx, right, [end], `hsl(${(i * 47) % 360},75%,35%)`, 6);
    });
    ctx.restore();
    label(ctx, `trajectories: ${pic.sampler}`, half + 10, 16);
  } else {
    label(ctx, "no family picture for this model", 6, 16);
  }
  ctx.strokeStyle = "#ddd";
  ctx.strokeRect(half - 2, 0, 0.5, canvas.height);
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"];

function drawLosses(run) {
  const canvas = $("losses");
  const ctx = clear(canvas);
  const legend = $("legend");
  legend.replaceChildren();
  if (!run || !run.losses || !run.losses.length) {
    label(ctx, run && !run.trainable ? "fitted at creation: no training steps" : "no steps yet", 8, 20);
    return;
  }
  const keys = [...new Set(run.losses.flatMap((p) => Object.keys(p[1])))];
  // the objectives ("loss", "critic/loss", ...) share one axis; other parts go to the legend
  const plotted = keys.filter((k) => k === "loss" || k.endsWith("/loss"));
  const all = plotted.flatMap((k) => run.losses.map((p) => p[1][k])).filter(Number.isFinite);
  const steps = run.losses.map((p) => p[0]);
  const s0 = Math.min(...steps);
  const s1 = Math.max(...steps, s0 + 1);
  // robust range: 2nd to 98th percentile, so one early spike does not flatten the curves
  const sorted = [...all].sort((a, b) => a - b);
  const lo = sorted.length ? sorted[Math.floor(0.02 * (sorted.length - 1))] : 0;
  let hi = sorted.length ? sorted[Math.ceil(0.98 * (sorted.length - 1))] : 1;
  if (hi - lo < 1e-12) hi = lo + 1;
  const left = 46;
  const f = {
    x: (s) => left + ((s - s0) / (s1 - s0)) * (canvas.width - left - 6),
    y: (v) => 8 + (1 - (Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo)) * (canvas.height - 28),
  };
  ctx.strokeStyle = "#ddd";
  ctx.strokeRect(left, 8, canvas.width - left - 6, canvas.height - 28);
  plotted.forEach((k, i) => {
    ctx.strokeStyle = COLORS[i % COLORS.length];
    ctx.lineWidth = 1.3;
    ctx.beginPath();
    let pen = false;
    for (const p of run.losses) {
      const v = p[1][k];
      if (!Number.isFinite(v)) continue;
      if (pen) ctx.lineTo(f.x(p[0]), f.y(v));
      else ctx.moveTo(f.x(p[0]), f.y(v));
      pen = true;
    }
    ctx.stroke();
  });
  label(ctx, fmt(hi), 2, 18);
  label(ctx, fmt(lo), 2, canvas.height - 22);
  label(ctx, `step ${s0}`, left, canvas.height - 4);
  label(ctx, `${s1}`, canvas.width - 44, canvas.height - 4);
  const last = run.losses[run.losses.length - 1][1];
  keys.forEach((k) => {
    const item = document.createElement("span");
    const i = plotted.indexOf(k);
    if (i >= 0) {
      const swatch = document.createElement("i");
      swatch.style.background = COLORS[i % COLORS.length];
      item.appendChild(swatch);
    }
    item.appendChild(document.createTextNode(`${k} ${fmt(last[k])}`));
    legend.appendChild(item);
  });
}

function fmt(v) {
  if (v === null || v === undefined) return "-";
  if (typeof v !== "number") return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return v.toExponential(2);
  return v.toFixed(a >= 100 ? 1 : 4);
}

function drawMetrics(run) {
  const body = $("metrics").tBodies[0];
  body.replaceChildren();
  const m = run && run.snapshot && run.snapshot.metrics;
  if (!m) return;
  const rows = [];
  if (m.modes_total !== undefined) {
    rows.push(["modes captured", `${m.modes} / ${m.modes_total}`]);
    rows.push(["% high quality (within 3 std)", fmt(m.hq_percent)]);
    rows.push(["KL(mode histogram || uniform)", fmt(m.kl_modes)]);
  } else {
    rows.push(["modes captured", "n/a (not a Gaussian mixture)"]);
  }
  rows.push(["MMD^2 (Gaussian kernel)", fmt(m.mmd2)]);
  rows.push(["finite samples", fmt(m.finite_fraction)]);
  rows.push(["step of the snapshot", String(run.snapshot.step)]);
  for (const [k, v] of rows) {
    const tr = body.insertRow();
    tr.insertCell().textContent = k;
    tr.insertCell().textContent = v;
  }
}

// ------------------------------------------------------------------------------ wiring
function wire() {
  $("create").addEventListener("click", createRun);
  $("start").addEventListener("click", () => action("start"));
  $("pause").addEventListener("click", () => action("pause"));
  $("step").addEventListener("click", () => action("step", { n: STEP_N }));
  $("reset").addEventListener("click", () => action("reset"));
  $("view-sampler").addEventListener("change", (e) => action("view", { sampler: e.target.value }));
  $("view-steps").addEventListener("change", (e) => {
    const n = Number(e.target.value);
    action("view", { steps: Number.isInteger(n) ? n : e.target.value });
  });
  $("view-noise").addEventListener("change", (e) => action("view", { noise: Number(e.target.value) }));
  window.addEventListener("pagehide", () => {
    if (state.runId) fetch(`/api/runs/${state.runId}`, { method: "DELETE", keepalive: true });
  });
  setInterval(poll, POLL_MS);
}

wire();
loadOptions().catch((e) => showError(`cannot load the options: ${e.message}`));
