// benignity dashboard: a small hash-routed page over the /v1 API (read-only).
// Every data request goes to this service's /v1 endpoints with the token typed into the
// page (sessionStorage); Plotly is loaded from /ui/assets only when a page draws a plot.
"use strict";

const TOKEN_KEY = "benignity.token";
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const PAGE = 25; // rows per table page: tables are paged, never whole
const FINAL_RUNS = 2000; // at most this many runs in the final-gap-vs-alpha panel
const GAP_FLOOR = 1e-16; // gaps at or below it are drawn at it on log axes
const CURVE_POINTS = 2000; // max_points of a drawn curve (a 1e8-epoch curve logs ~1,900)
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
  "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
const RUN_VERDICTS = ["global_minimum", "spurious_local_minimum", "saddle_point",
  "not_converged", "diverged", "collapsed"];
const VERDICT_COLOUR = {
  global_minimum: "#2a9d8f", spurious_local_minimum: "#e63946", saddle_point: "#f4a261",
  not_converged: "#6c757d", diverged: "#6a4c93", collapsed: "#264653",
};

// --- small helpers -------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

// replaceChildren without the null and false that conditional children leave
function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

function when(t) {
  return t ? `${t.replace("T", " ").slice(0, 19)} UTC` : "—";
}

function facts(pairs, attrs) {
  return h("dl", { class: "facts", ...attrs }, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]));
}

function compact(n) {
  return n >= 1e5 ? n.toExponential(2).replace("e+", "e") : String(n);
}

function fmt(x) {
  if (x === null || x === undefined) return "—";
  if (typeof x === "boolean") return x ? "yes" : "no";
  if (typeof x !== "number") return String(x);
  if (!Number.isFinite(x)) return String(x);
  if (Number.isInteger(x) && Math.abs(x) < 1e9) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return x.toExponential(3);
  return String(Number(x.toPrecision(5)));
}

function share(p, ci) {
  if (p === null || p === undefined) return "—";
  const text = p.toFixed(3);
  return ci ? `${text} [${ci[0].toFixed(2)}, ${ci[1].toFixed(2)}]` : text;
}

function describe(spec) {
  const data = (spec && spec.dataset) || {};
  const parts = [data.generator || "?"];
  for (const key of ["n", "d", "teacher_width", "rho", "seed"]) {
    if (data[key] !== undefined && data[key] !== null) parts.push(`${key}=${data[key]}`);
  }
  if (spec && spec.weight_decay !== undefined) parts.push(`λ=${fmt(spec.weight_decay)}`);
  return parts.join(" ");
}

function label(exp) {
  return exp.name || exp.id.slice(0, 8);
}

function num(text) {
  return h("td", { class: "num" }, text);
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

function statusBadge(status) {
  return h("span", { class: `status ${status}`, "data-status": status }, status);
}

function progressOf(exp) {
  const p = exp.progress || { done: 0, total: 0 };
  const pct = p.total ? Math.min(100, (100 * p.done) / p.total) : 0;
  return h("span", { class: "progress" },
    h("progress", { max: "100", value: pct.toFixed(1), "aria-label": `progress of ${label(exp)}` }),
    ` ${pct.toFixed(pct < 10 ? 1 : 0)}% `,
    h("span", { class: "muted" }, `${compact(p.done)}/${compact(p.total)} ${p.unit || ""}`));
}

function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === null || value === undefined || value === "") continue;
    if (Array.isArray(value)) value.forEach((v) => q.append(key, v));
    else q.set(key, value);
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

function select(name, text, options, value) {
  return h("label", {}, text,
    h("select", { name, id: `f-${name}` },
      h("option", { value: "" }, "any"),
      options.map((o) => {
        const [v, t] = Array.isArray(o) ? o : [o, o];
        return h("option", { value: String(v), selected: String(v) === String(value ?? "") }, t);
      })));
}

// --- the API -------------------------------------------------------------------------

class AuthError extends Error {}

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, signal) {
  const resp = await fetch(path, {
    headers: { Accept: "application/json", ...authHeaders() }, signal, cache: "no-store",
  });
  if (resp.status === 401 || resp.status === 403) {
    throw new AuthError("This service needs an API token: type yours at the top right.");
  }
  if (!resp.ok) {
    let detail = resp.statusText;
    try { detail = (await resp.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(`${resp.status}: ${detail}`);
  }
  return resp.json();
}

// Export links are real links; a click fetches the file with the token and saves it.
async function download(event) {
  event.preventDefault();
  const link = event.currentTarget;
  try {
    const resp = await fetch(link.href, { headers: authHeaders() });
    if (!resp.ok) throw new Error(`${resp.status} ${resp.statusText}`);
    const url = URL.createObjectURL(await resp.blob());
    const save = h("a", { href: url, download: link.dataset.file });
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) {
    link.after(h("span", { class: "error" }, ` ${err.message}`));
  }
}

let plotlyLoading = null;
function plotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  plotlyLoading ??= new Promise((resolve, reject) => {
    const script = h("script", { src: "/ui/assets/plotly.min.js" });
    script.onload = () => resolve(window.Plotly);
    script.onerror = () => reject(new Error("could not load /ui/assets/plotly.min.js"));
    document.head.append(script);
  });
  return plotlyLoading;
}

const PLOT_CONFIG = { displaylogo: false, responsive: true };

async function draw(el, traces, layout) {
  const Plotly = await plotly();
  const base = {
    margin: { l: 60, r: 16, t: 36, b: 50 }, hovermode: "closest",
    legend: { font: { size: 11 } }, font: { size: 12, color: "#1a1a1a" },
  };
  await Plotly.react(el, traces, { ...base, ...layout }, PLOT_CONFIG);
  el.dataset.drawn = String((el.dataset.drawn | 0) + 1);
}

// --- routing -------------------------------------------------------------------------

let view = new AbortController();

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, search] = hash.split("?");
  return { path, params: new URLSearchParams(search || "") };
}

async function render() {
  view.abort();
  view = new AbortController();
  const { signal } = view;
  const { path, params } = route();
  const main = document.getElementById("main");
  main.replaceChildren();
  for (const a of document.querySelectorAll(".top nav a")) a.removeAttribute("aria-current");
  try {
    const match = path.match(/^\/e\/([0-9a-f]{32})$/);
    if (match) {
      await experimentPage(main, match[1], signal);
    } else if (path === "/compare") {
      document.getElementById("nav-compare").setAttribute("aria-current", "page");
      await comparePage(main, params, signal);
    } else {
      document.getElementById("nav-experiments").setAttribute("aria-current", "page");
      await listPage(main, params, signal);
    }
  } catch (err) {
    if (signal.aborted) return;
    main.prepend(h("p", { class: "error", role: "alert" }, err.message));
    if (err instanceof AuthError) document.getElementById("token").focus();
  }
}

// --- the experiments list ------------------------------------------------------------

const LIST_FILTERS = ["kind", "status", "tag", "generator", "name"];

async function listPage(main, params, signal) {
  document.title = "Experiments · benignity";
  const filters = Object.fromEntries(LIST_FILTERS.map((k) => [k, params.get(k) || ""]));
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter experiments",
    onsubmit: (e) => {
      e.preventDefault();
      const data = new FormData(form);
      const picked = Object.fromEntries(LIST_FILTERS.map((k) => [k, data.get(k)]));
      location.hash = `#/${query(picked)}`;
    } },
  select("kind", "Kind", ["optimum", "census", "training"], filters.kind),
  select("status", "Status", ["queued", "running", "succeeded", "failed", "cancelled"],
    filters.status),
  h("label", {}, "Tag", h("input", { name: "tag", id: "f-tag", value: filters.tag, size: 14 })),
  select("generator", "Dataset", ["teacher", "orthogonal", "theorem2", "correlated", "custom"],
    filters.generator),
  h("label", {}, "Name contains",
    h("input", { name: "name", id: "f-name", value: filters.name, size: 16 })),
  h("button", { type: "submit" }, "Filter"),
  h("a", { href: "#/" }, "Clear"));
  const body = h("tbody");
  const table = h("table", { id: "experiments" },
    h("caption", {}, "Your experiments, newest first; status and progress update live."),
    h("thead", {}, h("tr", {}, ["Compare", "Name", "Kind", "Status", "Progress", "Dataset",
      "Tags", "Created"].map((t) => h("th", { scope: "col" }, t)))),
    body);
  const pager = h("div", { class: "pager" });
  const compare = h("button", { type: "button", id: "compare-selected",
    onclick: () => {
      const ids = [...body.querySelectorAll("input[name=cmp]:checked")].map((c) => c.value);
      location.hash = `#/compare${query({ ids: ids.join(",") })}`;
    } }, "Compare selected");
  main.append(h("h2", {}, "Experiments"), form,
    h("div", { class: "scroll" }, table), pager, compare);

  const cursor = params.get("cursor");
  const ask = { ...filters, tag: filters.tag || null, limit: PAGE, cursor, fields: "summary" };
  let first = true;
  while (!signal.aborted) {
    const page = await api(`/v1/experiments${query(ask)}`, signal);
    const checked = new Set([...body.querySelectorAll("input[name=cmp]:checked")].map((c) => c.value));
    body.replaceChildren(...page.items.map((exp) => h("tr", { "data-id": exp.id },
      h("td", {}, exp.kind === "optimum" ? "" : h("input", { type: "checkbox", name: "cmp",
        value: exp.id, checked: checked.has(exp.id), "aria-label": `compare ${label(exp)}` })),
      h("td", {}, h("a", { href: `#/e/${exp.id}` }, label(exp))),
      h("td", {}, exp.kind),
      h("td", {}, statusBadge(exp.status)),
      h("td", {}, progressOf(exp)),
      h("td", {}, describe(exp.spec)),
      h("td", {}, exp.tags.map((t) => h("span", { class: "tag" }, t))),
      h("td", {}, when(exp.created_at)))));
    if (!page.items.length) {
      body.append(h("tr", {}, h("td", { colspan: 8 }, "No experiments match these filters.")));
    }
    if (first) {
      first = false;
      const next = page.next_cursor
        ? h("a", { href: `#/${query({ ...filters, cursor: page.next_cursor })}`, id: "next-page" },
          "Next page")
        : null;
      fill(pager,
        cursor ? h("a", { href: `#/${query(filters)}` }, "First page") : null, next,
        h("span", { class: "muted" }, `${page.items.length} shown`));
    }
    const live = page.items.some((e) => !TERMINAL.has(e.status));
    await sleep(live ? 1500 : 10000, signal);
  }
}

// --- one experiment ------------------------------------------------------------------

async function experimentPage(main, id, signal) {
  let exp = await api(`/v1/experiments/${id}`, signal);
  document.title = `${label(exp)} · benignity`;
  const head = h("section", { "aria-label": "Status" });
  const body = h("div", { id: "kind-section" });
  const base = `/v1/experiments/${id}`;
  const exports = exp.kind === "optimum"
    ? [["export.csv", "rows (CSV)"], ["export.parquet", "rows (Parquet)"]]
    : exp.kind === "census"
      ? [["export.csv", "cones (CSV)"], ["export.parquet", "cones (Parquet)"],
        ["widths.csv", "widths (CSV)"], ["figure.svg", "figure (SVG)"], ["figure.png", "figure (PNG)"]]
      : [["export.csv", "runs (CSV)"], ["export.parquet", "runs (Parquet)"],
        ["curves.parquet?max_points=500", "curves (Parquet)"], ["figure.svg", "figure (SVG)"],
        ["figure.png", "figure (PNG)"]];
  main.append(
    h("p", {}, h("a", { href: "#/" }, "← Experiments")),
    h("h2", {}, `${label(exp)} `, h("span", { class: "muted" }, `${exp.kind} · ${exp.id}`)),
    head,
    body,
    h("h3", {}, "Exports"),
    h("p", { class: "exports" }, exports.map(([file, text]) => h("a", {
      href: `${base}/${file}`, "data-file": `${id.slice(0, 8)}-${file.split("?")[0]}`,
      onclick: download }, text))),
    h("details", {}, h("summary", {}, "Spec (every default filled in)"), h("pre", { class: "spec" },
      JSON.stringify(exp.spec, null, 2))));
  const section = exp.kind === "census" ? new CensusSection(body, exp, signal)
    : exp.kind === "training" ? new TrainingSection(body, exp, signal)
      : new OptimumSection(body, exp, signal);
  showHead(head, exp);
  await section.update(exp, true);
  while (!signal.aborted && !TERMINAL.has(exp.status)) {
    const started = Date.now();
    try {
      exp = await api(`/v1/experiments/${id}?wait=5`, signal); // long-poll: answers on a change
      if (signal.aborted) return;
      showHead(head, exp);
      await section.update(exp, false);
    } catch (err) {
      if (signal.aborted || err instanceof AuthError) throw err;
      fill(head.querySelector(".live-error") || head.appendChild(h("p", { class: "live-error error" })),
        `Live update failed (${err.message}); retrying.`);
      await sleep(3000, signal);
      continue;
    }
    await sleep(Math.max(0, 1000 - (Date.now() - started)), signal);
  }
}

function showHead(head, exp) {
  fill(head,
    facts([
      ["Status", statusBadge(exp.status)], ["Progress", progressOf(exp)],
      ["Dataset", describe(exp.spec)],
      ["Tags", exp.tags.length ? exp.tags.map((t) => h("span", { class: "tag" }, t)) : "—"],
      ["Created", when(exp.created_at)], ["Started", when(exp.started_at)],
      ["Finished", when(exp.finished_at)], ["Notes", exp.notes || "—"],
    ], { class: "facts wide", id: "head-facts", "aria-live": "polite" }),
    exp.error ? h("p", { class: "error", role: "alert" },
      `${exp.error.type}: ${exp.error.detail}`) : null);
}

function optimumFacts(result) {
  const cert = result.certificate || {};
  const worst = cert.max_dual_violation;
  const verdict = worst === null || worst === undefined ? "—"
    : worst <= 1e-6 ? h("span", { class: "v-global" }, "certified (dual violation ≤ 1e-6)")
      : h("span", { class: "v-spurious" }, "not certified (dual violation > 1e-6)");
  return facts([["Optimum L*", fmt(result.optimum)], ["Certificate", verdict],
    ["Max dual violation", fmt(worst)], ["Gap bound (weak duality)", fmt(cert.gap_bound)],
    ["Activation patterns", fmt(result.num_patterns)],
    ["Signed cones", fmt(result.num_signed_cones)],
    ["min(n^d, 2^n)", fmt(result.theory_bound)], ["Method", result.method || "—"]],
  { class: "facts wide", id: "optimum-facts" });
}

class OptimumSection {
  constructor(root, exp, signal) { Object.assign(this, { root, signal }); }

  async update(exp) {
    const result = exp.result;
    if (!result) {
      this.root.replaceChildren(h("p", { class: "muted" }, "The optimum appears when it is solved."));
      return;
    }
    const neurons = result.neurons || [];
    this.root.replaceChildren(
      h("h3", {}, "Certified optimum"), optimumFacts(result),
      h("h3", {}, `Neurons (${neurons.length})`),
      h("div", { class: "scroll" }, h("table", { id: "neurons" },
        h("caption", {}, "x ↦ a·relu(w·x): a network that attains the optimum"),
        h("thead", {}, h("tr", {}, ["#", "a", "‖w‖", "w"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, neurons.map((n, i) => h("tr", {}, num(i + 1), num(fmt(n.a)),
          num(fmt(Math.hypot(...n.w))), h("td", {}, n.w.map(fmt).join(", "))))))));
  }
}

// A paged table whose filters live in a form; `load(filters, cursor)` returns a page.
class PagedTable {
  constructor({ id, caption, columns, row, load, form }) {
    Object.assign(this, { row, load, form, cursors: [null], filters: {} });
    this.body = h("tbody");
    this.status = h("span", { class: "muted", role: "status" });
    this.prev = h("button", { type: "button", onclick: () => this.go(-1) }, "Previous page");
    this.next = h("button", { type: "button", onclick: () => this.go(1), id: `${id}-next` },
      "Next page");
    this.el = h("div", {}, form,
      h("div", { class: "scroll" }, h("table", { id },
        h("caption", {}, caption),
        h("thead", {}, h("tr", {}, columns.map((t) => h("th", { scope: "col" }, t)))),
        this.body)),
      h("div", { class: "pager" }, this.prev, this.next, this.status));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.filters = Object.fromEntries(new FormData(form));
      this.cursors = [null];
      this.refresh();
    });
  }

  go(step) {
    if (step > 0 && this.nextCursor) this.cursors.push(this.nextCursor);
    if (step < 0 && this.cursors.length > 1) this.cursors.pop();
    this.refresh();
  }

  async refresh() {
    const cursor = this.cursors[this.cursors.length - 1];
    const page = await this.load(this.filters, cursor);
    this.nextCursor = page.next_cursor;
    this.items = page.items;
    this.body.replaceChildren(...page.items.map((item) => this.row(item)));
    if (!page.items.length) this.body.append(h("tr", {}, h("td", { colspan: 12 }, "No rows match.")));
    this.prev.disabled = this.cursors.length <= 1;
    this.next.disabled = !page.next_cursor;
    this.status.textContent = `page ${this.cursors.length}, ${page.items.length} rows`;
    return page;
  }
}

class CensusSection {
  constructor(root, exp, signal) {
    Object.assign(this, { root, signal, drawnFor: null });
    this.summary = h("div");
    this.plot = h("div", { class: "plot", id: "census-plot", role: "img",
      "aria-label": "p_global, p_spurious and p_no_local_min against width" });
    this.rows = h("div");
    const base = `/v1/experiments/${exp.id}/cones`;
    const form = h("form", { class: "filters", "aria-label": "Filter cones" },
      select("width", "Width", exp.spec.widths || [], ""),
      select("verdict", "Verdict", ["global", "spurious", "no_local_min"], ""),
      h("button", { type: "submit", id: "cones-filter" }, "Filter cones"));
    this.cones = new PagedTable({
      id: "cones", form,
      caption: "Sampled cones (certified verdicts); filter by width and verdict",
      columns: ["Width", "Sample", "Verdict", "Value", "Gap", "Covered", "Neurons",
        "Birth margin", "Strict", "Method"],
      load: (f, cursor) => api(`${base}${query({ ...f, limit: PAGE, cursor })}`, signal),
      row: (c) => h("tr", {}, num(c.width), num(c.sample),
        h("td", { class: `v-${c.verdict}` }, c.verdict), num(fmt(c.value)), num(fmt(c.gap)),
        num(fmt(c.covered)), num(c.num_neurons), num(fmt(c.birth_margin)), h("td", {}, fmt(c.strict)),
        h("td", {}, c.method)),
    });
    root.append(h("h3", {}, "Census"), this.summary,
      this.plot, this.rows,
      h("h3", {}, "Cones"), this.cones.el);
  }

  async update(exp, first) {
    if (first || !TERMINAL.has(exp.status)) await this.cones.refresh();
    const result = exp.result;
    if (!result) {
      this.summary.replaceChildren(h("p", { class: "muted" },
        "The shares against width appear when the census finishes."));
      return;
    }
    if (this.drawnFor === exp.id) return;
    this.drawnFor = exp.id;
    if (!first) await this.cones.refresh();
    const t = result.threshold || {};
    fill(this.summary, facts([["Optimum L*", fmt(result.optimum)],
      ["Signed cones", fmt(result.num_signed_cones)],
      ["min(n^d, 2^n)", fmt(result.theory_bound)], ["Patterns", fmt(result.num_patterns)],
      ["m½: P(global) = 0.5", fmt(t.m_half)], ["m₉₅: P(global) = 0.95", fmt(t.m_95)]],
    { class: "facts wide", id: "census-facts" }));
    const rows = [...result.rows].sort((a, b) => a.width - b.width);
    this.rows.replaceChildren(h("div", { class: "scroll" }, h("table", { id: "census-rows" },
      h("caption", {}, "Shares per width with Wilson 95% intervals"),
      h("thead", {}, h("tr", {}, ["Width", "Samples", "p_global", "p_spurious", "p_no_local_min",
        "p_spurious_strict", "p_covered"].map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, num(r.width), num(r.samples),
        num(share(r.p_global, r.p_global_ci)), num(share(r.p_spurious, r.p_spurious_ci)),
        num(share(r.p_no_local_min, r.p_no_local_min_ci)), num(share(r.p_spurious_strict)),
        num(share(r.p_covered))))))));
    await draw(this.plot, censusTraces(rows, result), censusLayout(result, rows));
  }
}

function errorBars(rows, key) {
  if (!rows.some((r) => r[`${key}_ci`])) return undefined;
  return {
    type: "data", symmetric: false, thickness: 1, width: 3,
    array: rows.map((r) => (r[`${key}_ci`] ? r[`${key}_ci`][1] - r[key] : null)),
    arrayminus: rows.map((r) => (r[`${key}_ci`] ? r[key] - r[`${key}_ci`][0] : null)),
  };
}

function censusTraces(rows, result) {
  const widths = rows.map((r) => r.width);
  const series = [["p_global", "P(global minimum)", "#2a9d8f", "circle"],
    ["p_spurious", "P(spurious local minimum)", "#e63946", "x"],
    ["p_no_local_min", "P(no local minimum)", "#457b9d", "square"]];
  const traces = series.map(([key, name, color, symbol]) => ({
    type: "scatter", mode: "lines+markers", name, x: widths, y: rows.map((r) => r[key]),
    marker: { color, symbol, size: 8 }, line: { color }, error_y: errorBars(rows, key),
    hovertemplate: `width %{x}<br>${key} %{y:.3f}<extra></extra>`,
  }));
  const t = result.threshold || {};
  const marks = [[t.m_half, 0.5, "m½"], [t.m_95, 0.95, "m₉₅"]].filter(([m]) => m);
  if (marks.length) {
    traces.push({ type: "scatter", mode: "markers+text", name: "P(global) thresholds",
      x: marks.map((m) => m[0]), y: marks.map((m) => m[1]), text: marks.map((m) => m[2]),
      textposition: "top center", marker: { symbol: "triangle-down", size: 11, color: "#111" },
      hovertemplate: "%{text} ≈ %{x:.4g}<extra></extra>" });
  }
  return traces;
}

function vline(x, dash, text) {
  return {
    shape: { type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1,
      line: { color: "#444", width: 1.5, dash } },
    note: { x: Math.log10(x), xref: "x", yref: "paper", y: 0.02, yanchor: "bottom", text,
      textangle: -90, xanchor: "right", showarrow: false, font: { size: 11, color: "#333" } },
  };
}

// the widths themselves as ticks when there are few (as the figure does)
function widthTicks(widths) {
  const ticks = [...new Set(widths)].sort((a, b) => a - b);
  return ticks.length <= 12 ? { tickvals: ticks, ticktext: ticks.map(String) } : {};
}

function censusLayout(result, rows) {
  const lines = [];
  if (result.num_signed_cones) lines.push(vline(result.num_signed_cones, "solid",
    `signed cones = ${result.num_signed_cones}`));
  if (result.theory_bound) lines.push(vline(result.theory_bound, "dot",
    `min(n^d, 2^n) = ${result.theory_bound}`));
  const xs = [...rows.map((r) => r.width), ...lines.map((l) => l.shape.x0)];
  const lo = Math.log10(Math.min(...xs)) - 0.15;
  const hi = Math.log10(Math.max(...xs)) + 0.15;
  return {
    title: { text: "Verdict shares against width", font: { size: 14 } },
    xaxis: { type: "log", title: { text: "width m (sampled signed cones)" }, range: [lo, hi],
      ...widthTicks(xs) },
    yaxis: { title: { text: "fraction of samples" }, range: [-0.03, 1.08] },
    shapes: lines.map((l) => l.shape), annotations: lines.map((l) => l.note),
  };
}

class TrainingSection {
  constructor(root, exp, signal) {
    Object.assign(this, { root, signal, id: exp.id, picked: new Map(), finalFor: null });
    const spec = exp.spec;
    const lrs = [].concat((spec.optimizer || {}).lr ?? []);
    this.groups = h("div");
    this.curves = h("div", { class: "plot", id: "curve-plot", role: "img",
      "aria-label": "gap against epoch of the selected runs" });
    this.finals = h("div", { class: "plot", id: "final-gap-plot", role: "img",
      "aria-label": "final gap against init_scale alpha, by verdict" });
    this.finalNote = h("p", { class: "muted" });
    const form = h("form", { class: "filters", "aria-label": "Filter runs" },
      select("verdict", "Verdict", RUN_VERDICTS, ""),
      select("init_scale", "α (init_scale)", spec.init_scales || [], ""),
      select("width", "Width", spec.widths || [], ""),
      select("lr", "lr", lrs, ""),
      h("button", { type: "submit", id: "runs-filter" }, "Filter runs"));
    const base = `/v1/experiments/${exp.id}/runs`;
    this.runs = new PagedTable({
      id: "runs", form,
      caption: "Runs in grid order; tick a run to draw its gap curve",
      columns: ["Plot", "Width", "α", "Seed", "lr", "Status", "Verdict", "Epoch", "Gap",
        "‖∇‖²", "Cone global"],
      load: (f, cursor) => api(`${base}${query({ ...f, limit: PAGE, cursor })}`, signal),
      row: (r) => this.runRow(r, spec),
    });
    root.append(h("h3", {}, "Training"), this.groups,
      h("div", { class: "cols" },
        h("div", {}, h("h3", {}, "Gap against epoch (runs ticked below)"), this.curves),
        h("div", {}, h("h3", {}, "Final gap against α"), this.finals, this.finalNote)),
      h("h3", {}, "Runs"), this.runs.el);
  }

  runRow(r, spec) {
    const point = r.final || r.latest || {};
    const p = r.params;
    const box = h("input", { type: "checkbox", value: r.id, checked: this.picked.has(r.id),
      "aria-label": `plot run ${r.id.slice(0, 8)}`,
      onchange: (e) => {
        if (e.target.checked) this.picked.set(r.id, r); else this.picked.delete(r.id);
        this.drawCurves();
      } });
    return h("tr", { "data-run": r.id }, h("td", {}, box), num(p.width), num(fmt(p.init_scale)),
      num(p.seed), num(fmt(p.lr ?? (spec.optimizer || {}).lr)),
      h("td", {}, r.status), h("td", { class: r.verdict ? `v-${r.verdict}` : "" }, r.verdict || "—"),
      num(fmt(point.epoch)), num(fmt(point.gap)), num(fmt(point.grad_norm_sq)),
      h("td", {}, fmt((r.final || {}).cone_global)));
  }

  async update(exp, first) {
    const page = await this.runs.refresh();
    if (first && !this.picked.size) {
      for (const r of page.items.slice(0, 3)) this.picked.set(r.id, r);
      for (const box of this.runs.body.querySelectorAll("input[type=checkbox]")) {
        box.checked = this.picked.has(box.value);
      }
    }
    await this.drawCurves();
    if (exp.result) this.showGroups(exp.result);
    else {
      fill(this.groups, h("p", { class: "muted" }, TERMINAL.has(exp.status)
        ? `No verdict shares: the sweep ${exp.status}.`
        : "The verdict shares per group appear when the sweep finishes; the runs below are live."));
    }
    if (first || (TERMINAL.has(exp.status) && this.finalFor !== exp.status)) {
      this.finalFor = exp.status;
      await this.drawFinals(exp);
    }
  }

  showGroups(result) {
    const groups = result.groups || [];
    const extra = ["data_seed", "weight_decay", "lr"].filter((k) => groups.some((g) => g[k] != null));
    fill(this.groups,
      facts([["Optimum L*", fmt(result.optimum)]], { class: "facts wide" }),
      h("div", { class: "scroll" }, h("table", { id: "groups" },
        h("caption", {}, "Verdict shares per group (Wilson 95% intervals)"),
        h("thead", {}, h("tr", {}, ["Width", "α", ...extra, "Runs", "p_global", "p_spurious",
          "p_saddle", "p_not_converged", "p_cone_global"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, groups.map((g) => h("tr", {}, num(g.width), num(fmt(g.init_scale)),
          extra.map((k) => num(fmt(g[k]))), num(g.runs), num(share(g.p_global, g.p_global_ci)),
          num(share(g.p_spurious, g.p_spurious_ci)), num(share(g.p_saddle)),
          num(share(g.p_not_converged)), num(share(g.p_cone_global, g.p_cone_global_ci))))))));
  }

  async drawCurves() {
    const runs = [...this.picked.values()];
    // a queued run has no curve yet (404): it is drawn empty until its first checkpoint
    const empty = { epoch: [], gap: [] };
    const curves = await Promise.all(runs.map((r) => api(
      `/v1/experiments/${this.id}/runs/${r.id}/curve?max_points=${CURVE_POINTS}`, this.signal)
      .catch((err) => { if (err instanceof AuthError) throw err; return empty; })));
    const traces = runs.map((r, i) => {
      const c = curves[i];
      const keep = c.epoch.map((e, k) => k).filter((k) => c.epoch[k] > 0); // log x: no epoch 0
      return { type: "scatter", mode: "lines", name:
        `w=${r.params.width} α=${fmt(r.params.init_scale)} s=${r.params.seed}`,
      x: keep.map((k) => c.epoch[k]),
      y: keep.map((k) => (c.gap[k] > GAP_FLOOR ? c.gap[k] : GAP_FLOOR)),
      line: { color: COLOURS[i % COLOURS.length], width: 1.8, simplify: false },
      hovertemplate: "epoch %{x:.4g}<br>gap %{y:.3e}<extra>%{fullData.name}</extra>" };
    });
    if (this.signal.aborted) return;
    await draw(this.curves, traces, {
      title: { text: runs.length ? "L − L* of the selected runs" : "Tick runs above to draw them",
        font: { size: 14 } },
      xaxis: { type: "log", title: { text: "epoch" } },
      yaxis: { type: "log", title: { text: "gap L − L*" },
        exponentformat: "power" },
    });
  }

  async drawFinals(exp) {
    const base = `/v1/experiments/${this.id}/runs`;
    const runs = [];
    let cursor = null;
    do { // pages of finished runs, up to FINAL_RUNS: never every run of a large sweep
      const page = await api(`${base}${query({ limit: 1000, cursor })}`, this.signal);
      runs.push(...page.items);
      cursor = page.next_cursor;
    } while (cursor && runs.length < FINAL_RUNS);
    const judged = runs.filter((r) => r.verdict && r.final && r.params.init_scale > 0);
    const traces = RUN_VERDICTS.filter((v) => judged.some((r) => r.verdict === v)).map((v) => {
      const mine = judged.filter((r) => r.verdict === v);
      return { type: "scatter", mode: "markers", name: v,
        x: mine.map((r) => r.params.init_scale),
        y: mine.map((r) => {
          const gap = r.final.gap;
          return gap === null || gap === undefined ? null : Math.max(gap, GAP_FLOOR);
        }),
        marker: { color: VERDICT_COLOUR[v], size: 7, opacity: 0.8,
          line: { color: "#000", width: 0.5 } },
        hovertemplate: "α %{x:.4g}<br>final gap %{y:.3e}<extra>" + v + "</extra>" };
    });
    this.finalNote.textContent = cursor
      ? `${judged.length} judged runs of the first ${runs.length} in grid order (the sweep ` +
        "has more; filter the run table to see them)."
      : `${judged.length} judged runs of ${runs.length}.`;
    if (this.signal.aborted) return;
    await draw(this.finals, traces, {
      title: { text: judged.length ? "final gap per run, by verdict" : "No judged runs yet",
        font: { size: 14 } },
      showlegend: true,
      xaxis: { type: "log", title: { text: "init_scale α" } },
      yaxis: { type: "log", title: { text: "final gap L − L*" }, exponentformat: "power" },
    });
  }
}

// --- compare -------------------------------------------------------------------------

async function comparePage(main, params, signal) {
  document.title = "Compare · benignity";
  const ids = (params.get("ids") || "").split(",").filter((x) => /^[0-9a-f]{32}$/.test(x));
  const picker = h("form", { class: "filters", "aria-label": "Pick experiments to compare",
    onsubmit: (e) => {
      e.preventDefault();
      const picked = [...picker.querySelectorAll("input:checked")].map((c) => c.value);
      location.hash = `#/compare${query({ ids: picked.join(",") })}`;
    } });
  const censusPlot = h("div", { class: "plot", id: "compare-census", role: "img",
    "aria-label": "p_global against width for the compared censuses" });
  const trainingPlot = h("div", { class: "plot", id: "compare-training", role: "img",
    "aria-label": "share of runs at a global minimum against alpha for the compared sweeps" });
  const table = h("div");
  main.append(h("h2", {}, "Compare experiments"),
    h("p", { class: "muted" }, "Censuses overlay P(global) against width (the paper's main " +
      "figure); training sweeps overlay the share of runs at a global minimum against α."),
    picker, table, h("div", { class: "cols" }, censusPlot, trainingPlot));

  const [censuses, sweeps] = await Promise.all(["census", "training"].map((kind) => api(
    `/v1/experiments${query({ kind, status: "succeeded", limit: 50, fields: "summary" })}`, signal)));
  const choices = [...censuses.items, ...sweeps.items];
  picker.append(h("fieldset", {}, h("legend", {}, "Succeeded censuses and sweeps (newest 50 each)"),
    choices.map((e) => h("label", { class: "choice" }, h("input", { type: "checkbox",
      value: e.id, checked: ids.includes(e.id) }), ` ${label(e)} (${e.kind}, ${describe(e.spec)}) `))),
  h("button", { type: "submit", id: "compare-go" }, "Compare"));

  const exps = await Promise.all(ids.map((id) => api(`/v1/experiments/${id}`, signal)));
  fill(table, h("table", { id: "compared" },
    h("caption", {}, "Compared experiments"),
    h("thead", {}, h("tr", {}, ["Experiment", "Kind", "Dataset", "Optimum", "Signed cones",
      "m½", "m₉₅"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, exps.map((e) => {
      const r = e.result || {};
      const t = r.threshold || {};
      return h("tr", {}, h("td", {}, h("a", { href: `#/e/${e.id}` }, label(e))), h("td", {}, e.kind),
        h("td", {}, describe(e.spec)), num(fmt(r.optimum)), num(fmt(r.num_signed_cones)),
        num(fmt(t.m_half)), num(fmt(t.m_95)));
    }))));
  const census = exps.filter((e) => e.kind === "census" && e.result);
  const training = exps.filter((e) => e.kind === "training" && e.result);
  censusPlot.hidden = !census.length;
  trainingPlot.hidden = !training.length;
  if (census.length) {
    await draw(censusPlot, census.map((e, i) => {
      const rows = [...e.result.rows].sort((a, b) => a.width - b.width);
      const color = COLOURS[i % COLOURS.length];
      return { type: "scatter", mode: "lines+markers", name: `${label(e)} (${describe(e.spec)})`,
        x: rows.map((r) => r.width), y: rows.map((r) => r.p_global),
        error_y: errorBars(rows, "p_global"), marker: { color, size: 8 }, line: { color },
        hovertemplate: "width %{x}<br>p_global %{y:.3f}<extra>%{fullData.name}</extra>" };
    }), {
      title: { text: "P(global minimum) against width", font: { size: 14 } },
      xaxis: { type: "log", title: { text: "width m" },
        ...widthTicks(census.flatMap((e) => e.result.rows.map((r) => r.width))) },
      yaxis: { title: { text: "P(global)" }, range: [-0.03, 1.05] },
      showlegend: true,
      legend: { x: 0.01, y: 0.99, bgcolor: "rgba(255,255,255,0.85)", font: { size: 11 } },
    });
  }
  if (training.length) {
    const traces = [];
    training.forEach((e, i) => {
      const byWidth = new Map();
      for (const g of e.result.groups || []) {
        if (!byWidth.has(g.width)) byWidth.set(g.width, []);
        byWidth.get(g.width).push(g);
      }
      for (const [width, groups] of byWidth) {
        groups.sort((a, b) => a.init_scale - b.init_scale);
        const color = COLOURS[(i + traces.length / 2) % COLOURS.length];
        traces.push({ type: "scatter", mode: "lines+markers",
          name: `${label(e)} width ${width}: p_global`, x: groups.map((g) => g.init_scale),
          y: groups.map((g) => g.p_global), error_y: errorBars(groups, "p_global"),
          marker: { color, size: 8 }, line: { color },
          hovertemplate: "α %{x:.4g}<br>p_global %{y:.3f}<extra>%{fullData.name}</extra>" },
        { type: "scatter", mode: "lines+markers",
          name: `${label(e)} width ${width}: final cone global`, x: groups.map((g) => g.init_scale),
          y: groups.map((g) => g.p_cone_global), marker: { color, size: 7, symbol: "diamond-open" },
          line: { color, dash: "dot" },
          hovertemplate: "α %{x:.4g}<br>p_cone_global %{y:.3f}<extra>%{fullData.name}</extra>" });
      }
    });
    await draw(trainingPlot, traces, {
      title: { text: "Share of runs at a global minimum against α", font: { size: 14 } },
      xaxis: { type: "log", title: { text: "init_scale α" } },
      yaxis: { title: { text: "share of runs" }, range: [-0.03, 1.05] },
      showlegend: true,
      legend: { x: 0.01, y: 0.99, bgcolor: "rgba(255,255,255,0.85)", font: { size: 11 } },
    });
  }
}

// --- start ---------------------------------------------------------------------------

function showWho() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  document.getElementById("who").textContent = token ? "token set" : "no token";
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = document.getElementById("token");
    const token = input.value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    input.value = "";
    showWho();
    document.getElementById("main").focus(); // on to the data, not back to the token
    render();
  });
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showWho();
    render();
  });
  document.getElementById("skip").addEventListener("click", (e) => {
    e.preventDefault();
    document.getElementById("main").focus();
  });
  window.addEventListener("hashchange", render);
  showWho();
  render();
});
