// orchestrate view: the pages, rendered from the JSON API. No framework, no build step; every text from
// the results goes through textContent (never innerHTML).
"use strict";

const $main = () => document.getElementById("main");
// Puts a page's parts in <main>, leaving out the parts a page does not have (null/false).
const show = (...parts) => $main().replaceChildren(...parts.flat().filter((p) => p !== null && p !== undefined && p !== false));

function h(tag, attrs, ...children) {
  const svg = ["svg", "rect", "text", "line", "polyline", "g", "title"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// A bundle (orchestrate view --bundle) opens from file://: its data are scripts, not a server. data/runs.js
// set window.BUNDLE; every other data file, loaded when a page needs it, hands its data to bundleData().
const BUNDLE = window.BUNDLE || null;
const link = (path) => (BUNDLE ? "#" + path : path);
// The page's query: after the path, or in a bundle after the path in the hash (#/run/r1?q=...).
const pageQuery = () => new URLSearchParams(BUNDLE ? location.hash.split("?")[1] || "" : location.search);
const loaded = new Map(), waiting = new Map();
window.bundleData = (key, data) => { const resolve = waiting.get(key); waiting.delete(key); if (resolve) resolve(data); };

function bundleLoad(file, key) {
  if (!loaded.has(key)) {
    loaded.set(key, new Promise((resolve, reject) => {
      waiting.set(key, resolve);
      const s = document.createElement("script");
      const missing = () => { waiting.delete(key); loaded.delete(key); reject(new Error(`${file} is not in this bundle`)); };
      s.src = `data/${file}`;
      s.onerror = missing;
      s.onload = () => { if (waiting.has(key)) missing(); };
      document.head.append(s);
    }));
  }
  return loaded.get(key);
}

function runKey(name) {
  const k = BUNDLE.names.indexOf(name);
  if (k < 0) throw new Error(`run ${name} is not in this bundle`);
  return k;
}

// Search with no server: the bundle's index holds the text of each conversation item its pages show.
async function bundleSearch(k, rows, query, limit) {
  if (query.length < 2) return { hits: [], truncated: false, query };
  const index = await bundleLoad(`${k}/search.js`, `search/${k}`);
  index.lower = index.lower || index.items.map((it) => it[2].toLowerCase());
  const needle = query.toLowerCase(), hits = [], around = 80;
  for (let i = 0; i < index.items.length && hits.length < limit; i++) {
    const at = index.lower[i].indexOf(needle);
    if (at < 0) continue;
    const [n, offset, text] = index.items[i], r = rows[n];
    const lo = Math.max(0, at - around), hi = Math.min(text.length, at + needle.length + around);
    hits.push({ index: n, case_id: r.case_id, model_id: r.model_id, repeat: r.repeat, attempt: r.attempt, offset,
      snippet: (lo ? "…" : "") + text.slice(lo, hi) + (hi < text.length ? "…" : "") });
  }
  return { hits, truncated: hits.length >= limit, incomplete: index.truncated, query };
}

async function bundleApi(path) {
  const u = new URL(path, "http://bundle/"), q = u.searchParams;
  const parts = u.pathname.split("/").filter(Boolean).map(decodeURIComponent);  // api, runs, name, ...
  if (u.pathname === "/api/runs") return { runs: BUNDLE.runs, total: BUNDLE.runs.length };
  if (u.pathname === "/api/compare") {
    const i = runKey(q.get("a")), j = runKey(q.get("b"));
    if (i === j) throw new Error("choose two different runs to compare");
    return bundleLoad(`compare-${i}-${j}.js`, `compare/${i}/${j}`);
  }
  if (parts[1] !== "runs") throw new Error("not in this bundle");
  const k = runKey(parts[2]);
  const run = await bundleLoad(`${k}/run.js`, `run/${k}`);
  if (parts.length === 3) return run.run;
  if (parts[3] === "search") return bundleSearch(k, run.rows, q.get("q") || "", Number(q.get("limit") || 100));
  if (parts.length === 4) {
    const passed = q.get("passed");
    const rows = run.rows.filter((r) => (!q.get("status") || r.status === q.get("status")) && (!q.get("model") || r.model_id === q.get("model"))
      && (!q.get("tag") || r.tags.includes(q.get("tag"))) && (!passed || Boolean(r.passed) === (passed === "true")) && (q.get("final") !== "true" || r.final));
    const start = Number(q.get("start") || 0), limit = Number(q.get("limit") || 100);
    return { total: rows.length, estimated: false, start, rows: rows.slice(start, start + limit) };
  }
  const n = Number(parts[4]);
  const a = await bundleLoad(`${k}/attempt-${n}.js`, `attempt/${k}/${n}`);
  if (parts.length === 5) return a;
  return { items: a.items, next: null, bytes: a.transcript ? a.transcript.bytes : 0 };
}

async function api(path) {
  if (BUNDLE) return bundleApi(path);
  const res = await fetch(path, { credentials: "same-origin" });
  const body = await res.json().catch(() => ({ error: res.statusText }));
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%");
const usd = (x) => (x === null || x === undefined ? "–" : Math.abs(x) >= 100
  ? "$" + Number(x).toLocaleString("en", { minimumFractionDigits: 2, maximumFractionDigits: 2 }) : "$" + Number(x).toFixed(4));
const secs = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(1) + " s");
const num = (x) => (x === null || x === undefined ? "–" : Number(x).toLocaleString("en"));
const when = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : "–");
const enc = encodeURIComponent;

function outcome(r) {
  if (r.error) return h("span", { class: "pill error", text: r.status });
  if (r.passed) return h("span", { class: "pill pass", text: "pass" });
  return h("span", { class: "pill fail", text: r.passed === false ? "fail" : r.status });
}

function crumbs(...parts) {
  const c = document.getElementById("crumbs");
  c.replaceChildren(...parts.map((p) => (typeof p === "string" ? h("span", { text: "/ " + p }) : p)));
}

function setLive(on) { document.getElementById("live").hidden = !on; }

function fail(err) { $main().replaceChildren(h("div", { class: "error-box", text: String(err.message || err) })); }

// ------------------------------------------------------------------------------------------ charts

function barChart(title, groups, intervals) {
  // groups: {name: {attempts, pass_rate}}; intervals: {name: {graded, passed, infra_errors, rate, ci_low,
  // ci_high}} (the report's). With an interval the bar is the rate among graded attempts (infrastructure
  // errors out, as the interval is) with its 95% Wilson whisker; without, the plain pass rate.
  const names = Object.keys(groups);
  if (!names.length) return null;
  const rowH = 22, labelW = 180, barW = 260, w = labelW + barW + 230;
  const svg = h("svg", { width: w, height: names.length * rowH + 8, role: "img", "aria-label": title });
  names.forEach((n, i) => {
    const g = groups[n], ci = intervals && intervals[n], y = i * rowH + 4;
    const rate = (ci ? ci.rate : g.pass_rate) || 0;
    svg.append(h("text", { x: 0, y: y + 14, text: n.length > 26 ? n.slice(0, 25) + "…" : n }, h("title", { text: n })));
    svg.append(h("rect", { x: labelW, y, width: barW, height: rowH - 6, fill: "#eef0f4" }));
    svg.append(h("rect", { x: labelW, y, width: Math.max(1, rate * barW), height: rowH - 6, fill: "#1f8f4e" }));
    let label = `${pct(g.pass_rate)} (${num(g.attempts)})`;
    if (ci && ci.ci_low != null) {
      const x1 = labelW + ci.ci_low * barW, x2 = labelW + ci.ci_high * barW, ym = y + 8;
      svg.append(h("line", { x1, x2, y1: ym, y2: ym, stroke: "#1d2330", "stroke-width": 1.5 }));
      svg.append(h("line", { x1, x2: x1, y1: ym - 4, y2: ym + 4, stroke: "#1d2330" }));
      svg.append(h("line", { x1: x2, x2, y1: ym - 4, y2: ym + 4, stroke: "#1d2330" }));
      const infra = ci.infra_errors ? `, ${num(ci.infra_errors)} infra` : "";
      label = `${pct(ci.rate)} [${pct(ci.ci_low)}–${pct(ci.ci_high)}] ${num(ci.passed)}/${num(ci.graded)}${infra}`;
    } else if (ci) {
      label = `– none graded, ${num(ci.infra_errors)} infra`;
    }
    svg.append(h("text", { x: labelW + barW + 6, y: y + 14, text: label }));
  });
  return h("div", { class: "chart" }, h("h2", { text: title }), svg);
}

function lineChart(title, points, pick, fmt) {
  if (!points || points.length < 2) return null;
  const w = 420, ht = 120, pad = 30;
  const xs = points.map((p) => p[0]), ys = points.map(pick);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1, y1 = Math.max(...ys) || 1;
  const sx = (x) => pad + ((x - x0) / (x1 - x0 || 1)) * (w - 2 * pad), sy = (y) => ht - 20 - (y / y1) * (ht - 30);
  const svg = h("svg", { width: w, height: ht, role: "img", "aria-label": title });
  svg.append(h("polyline", { points: points.map((p) => `${sx(p[0])},${sy(pick(p))}`).join(" "), fill: "none", stroke: "#2f5fd0", "stroke-width": 2 }));
  svg.append(h("text", { x: pad, y: ht - 4, text: secs(x0) }), h("text", { x: w - pad - 40, y: ht - 4, text: secs(x1) }));
  svg.append(h("text", { x: 0, y: 12, text: fmt(y1) }));
  return h("div", { class: "chart" }, h("h2", { text: title }), svg);
}

// ------------------------------------------------------------------------------------------ runs

const FIRST_RUNS = 100;

async function runsPage() {
  crumbs();
  const t0 = performance.now();
  // The newest runs first (a few kB, at once), then every run: a results directory of thousands of
  // runs shows its first rows without waiting for the rest to be read.
  const first = await api(`/api/runs?first=${FIRST_RUNS}`);
  let runs = first.runs, total = first.total ?? runs.length;
  let sortKey = "started_at", desc = true, filter = "", state = "";
  const picked = new Set();
  const cols = [
    ["run_id", "run"], ["suite", "suite"], ["state", "state"], ["started_at", "started"], ["ended_at", "ended"],
    ["attempts_done", "attempts", "num"], ["pass_rate", "pass rate", "num"], ["cost_usd", "cost", "num"],
  ];
  const tbody = h("tbody");
  const compareBtn = h("button", { disabled: true, onclick: () => { const [a, b] = [...picked]; location.href = link(`/compare?a=${enc(a)}&b=${enc(b)}`); } }, "Compare 2 selected");
  const count = h("span", { class: "muted" });
  const head = h("tr", {}, h("th", {}), ...cols.map(([k, label, cls]) => h("th", { class: "sort " + (cls || ""), onclick: () => { desc = sortKey === k ? !desc : false; sortKey = k; draw(); } }, label)));
  function draw() {
    const f = filter.toLowerCase();
    const rows = runs.filter((r) => (!state || r.state === state) && (!f || `${r.run_id} ${r.suite || ""}`.toLowerCase().includes(f)));
    rows.sort((a, b) => { const x = a[sortKey] ?? "", y = b[sortKey] ?? ""; return (x < y ? -1 : x > y ? 1 : 0) * (desc ? -1 : 1); });
    tbody.replaceChildren(...rows.map((r) => h("tr", {},
      h("td", {}, h("input", { type: "checkbox", checked: picked.has(r.name), onchange: (e) => { e.target.checked ? picked.add(r.name) : picked.delete(r.name); compareBtn.disabled = picked.size !== 2; } })),
      h("td", {}, h("a", { href: link(`/run/${enc(r.name)}`), text: r.run_id })),
      h("td", { text: r.suite || "–" }),
      h("td", {}, h("span", { class: "pill " + r.state, text: r.state }), r.stop_reason && r.state !== "finished" ? h("span", { class: "muted", text: " " + r.stop_reason }) : null),
      h("td", { text: when(r.started_at) }), h("td", { text: when(r.ended_at) }),
      h("td", { class: "num", text: `${r.attempts_estimated ? "~" : ""}${num(r.attempts_done)} / ${num(r.attempts_planned)}` }),
      h("td", { class: "num", text: pct(r.pass_rate) }), h("td", { class: "num", text: usd(r.cost_usd) }))));
    count.textContent = `${rows.length} of ${runs.length} runs` + (total > runs.length ? ` (reading the other ${num(total - runs.length)}…)` : "");
  }
  show(
    h("h1", { text: "Runs" }),
    h("div", { class: "bar" },
      h("input", { type: "search", placeholder: "filter by run or suite", oninput: (e) => { filter = e.target.value; draw(); } }),
      h("select", { onchange: (e) => { state = e.target.value; draw(); } }, ...["", "running", "finished", "interrupted"].map((s) => h("option", { value: s, text: s || "any state" }))),
      BUNDLE && BUNDLE.runs.length < 2 ? null : compareBtn, count),
    h("table", { id: "runs" }, h("thead", {}, head), tbody));
  draw();
  document.body.dataset.first = String(Math.round(performance.now() - t0));
  if (total > runs.length) {
    runs = (await api("/api/runs")).runs;
    total = runs.length;
    draw();
  }
  document.body.dataset.ready = String(Math.round(performance.now() - t0));
}

// ------------------------------------------------------------------------------------------ run

async function runPage(name) {
  const base = `/api/runs/${enc(name)}`;
  crumbs(h("a", { href: link(`/run/${enc(name)}`), text: "/ " + name }));
  const run = await api(base);
  const state = { status: "", model: "", tag: "", passed: "", final: "", start: 0, limit: 100 };
  const stats = h("div", { class: "cards" });
  const charts = h("div", { class: "charts" });
  const tbody = h("tbody"), pageInfo = h("span", { class: "muted" });
  const prev = h("button", { onclick: () => { state.start = Math.max(0, state.start - state.limit); load(); } }, "‹ prev");
  const next = h("button", { onclick: () => { state.start += state.limit; load(); } }, "next ›");
  const hits = h("div");
  let total = 0, running = [], recordRows = [], recorded = new Set();
  const nameOf = (r) => `${r.case_id}__${r.model_id}__${r.repeat}__${r.attempt}.jsonl`;

  function drawSummary(s) {
    const t = s.totals;
    const card = (v, label) => h("div", { class: "card" }, h("b", { text: v }), h("span", { text: label }));
    stats.replaceChildren(card(num(t.attempts), "attempts (final)"), card(pct(t.pass_rate), "pass rate"),
      card(`${num(t.passed)} / ${num(t.failed)} / ${num(t.errors)}`, "passed / failed / errors"),
      card(usd(t.cost_usd_all_attempts ?? t.cost_usd), "cost (all tries)"),
      card(`${num(t.tokens_in)} / ${num(t.tokens_out)}`, "tokens in / out"),
      card(`${secs(t.duration_s.p50)} / ${secs(t.duration_s.p90)}`, "duration p50 / p90"),
      card(num(t.retried), "retried"));
    const iv = run.intervals || {};
    charts.replaceChildren(...[barChart("Pass rate by model (95% interval, infrastructure errors left out)", s.by_model, iv.by_model), barChart("Pass rate by tag (95% interval)", s.by_tag, iv.by_tag)].filter(Boolean));
  }
  const select = (key, values, label) => h("select", { onchange: (e) => { state[key] = e.target.value; state.start = 0; load(); } },
    h("option", { value: "", text: label }), ...values.map((v) => (Array.isArray(v) ? h("option", { value: v[0], text: v[1] }) : h("option", { value: v, text: v }))));

  // Attempts running now (a run in progress): above the first page, while the filters allow them.
  function runningRows() {
    if (state.start !== 0 || state.passed !== "" || state.final !== "" || (state.status && state.status !== "running")) return [];
    // A record fetched since the list of running attempts came (it lags by one look at most) wins.
    return running.filter((r) => !recorded.has(r.name) && (!state.model || r.model_id === state.model) && (!state.tag || r.tags.includes(state.tag))).map((r) => h("tr", { class: "running" },
      h("td", {}, h("a", { href: `/run/${enc(name)}/running/${enc(r.name)}`, text: r.case_id })),
      h("td", { text: r.model_id }), h("td", { class: "num", text: r.repeat }), h("td", { class: "num", text: r.attempt }),
      h("td", { text: "running" }), h("td", {}, h("span", { class: "pill running", text: "running" })), h("td", { class: "num", text: "–" }),
      h("td", { class: "num", text: r.started_at ? secs((Date.now() - Date.parse(r.started_at)) / 1000) : "–" }), h("td", { class: "muted", text: r.node ? `on ${r.node.slice(0, 12)}` : "" })));
  }
  function drawRows() { tbody.replaceChildren(...runningRows(), ...recordRows); }

  async function load() {
    const q = new URLSearchParams(Object.entries(state).filter(([, v]) => v !== ""));
    const page = state.status === "running" ? { total: 0, start: 0, rows: [] } : await api(`${base}/attempts?${q}`);
    total = page.total;
    recorded = new Set(page.rows.map(nameOf));
    recordRows = page.rows.map((r) => h("tr", {},
      h("td", {}, h("a", { href: link(`/run/${enc(name)}/attempt/${r.index}`), text: r.case_id })),
      h("td", { text: r.model_id }), h("td", { class: "num", text: r.repeat }), h("td", { class: "num", text: r.attempt + (r.final ? "" : " (retried)") }),
      h("td", { text: r.status }), h("td", {}, outcome(r)), h("td", { class: "num", text: usd(r.cost_usd) }),
      h("td", { class: "num", text: secs(r.duration_s) }), h("td", { class: "muted", text: r.reason })));
    drawRows();
    pageInfo.textContent = state.status === "running" ? `${num(running.length)} running` : total ? `${num(page.start + 1)}–${num(page.start + page.rows.length)} of ${page.estimated ? "~" : ""}${num(total)}` : "no attempt matches";
    prev.disabled = state.start === 0;
    next.disabled = state.start + state.limit >= total;
  }

  async function search(q) {
    if (q.length < 2) { hits.replaceChildren(); return; }
    hits.replaceChildren(h("p", { class: "muted", text: "searching…" }));
    const res = await api(`${base}/search?q=${enc(q)}`);
    const part = res.incomplete ? " (this bundle's search index holds only the first part of the transcripts)" : "";
    hits.replaceChildren(h("p", { class: "muted", text: `${res.hits.length}${res.truncated ? "+" : ""} match(es) for “${q}”${part}` }),
      ...res.hits.map((x) => h("div", { class: "hit" },
        h("a", { href: link(`/run/${enc(name)}/attempt/${x.index}`) + `?at=${x.offset}`, text: `${x.case_id} · ${x.model_id} · #${x.repeat}/${x.attempt}` }),
        " ", h("code", { text: x.snippet }))));
  }

  const c = run.choices;
  const searchBox = h("input", { type: "search", id: "search", placeholder: "text in any message, tool call or output", size: 50, onchange: (e) => search(e.target.value).catch(fail) });
  const live = run.info.state === "running" && window.EventSource && !BUNDLE;
  if (live) running = (await api(`${base}/running`)).rows;
  show(
    h("h1", { text: `Run ${run.info.run_id}` }, " ", h("span", { class: "pill " + run.info.state, text: run.info.state })),
    h("p", { class: "muted", text: `suite ${run.info.suite || "–"} · started ${when(run.info.started_at)} · ended ${when(run.info.ended_at)} · ${num(run.info.attempts_planned)} planned` }),
    stats, charts,
    h("h2", { text: "Search the transcripts" }),
    h("div", { class: "bar" }, searchBox),
    hits,
    h("h2", { text: "Attempts" }),
    h("div", { class: "bar" }, select("status", live ? [...c.status, "running"] : c.status, "any status"), select("model", c.model, "any model"), select("tag", c.tag, "any tag"),
      select("passed", [["true", "passed"], ["false", "not passed"]], "passed or not"), select("final", [["true", "final only"]], "all tries"), prev, next, pageInfo),
    h("table", { id: "attempts" }, h("thead", {}, h("tr", {}, ...["case", "model", "repeat", "attempt", "status", "outcome", "cost", "duration", "reason"].map((x) => h("th", { text: x })))), tbody));
  drawSummary(run.summary);
  await load();
  const asked = pageQuery().get("q");  // a search in the URL (#/run/r1?q=... in a bundle) runs at once
  if (asked) { searchBox.value = asked; await search(asked); }
  document.body.dataset.ready = "1";
  if (live) {
    const es = new EventSource(`${base}/live?from=${run.count}`);
    setLive(true);
    es.addEventListener("attempts", (e) => { const d = JSON.parse(e.data); drawSummary(d.summary); load(); });
    es.addEventListener("running", (e) => { running = JSON.parse(e.data).rows; drawRows(); if (state.status === "running") pageInfo.textContent = `${num(running.length)} running`; });
    es.addEventListener("state", (e) => { const info = JSON.parse(e.data); if (info.state !== "running") { running = []; drawRows(); setLive(false); es.close(); } });
  }
}

// ------------------------------------------------------------------------------------------ attempt

const TITLES = { prompt: "prompt", assistant: "assistant", reasoning: "reasoning", completion: "completion result", output: "command output", command: "command", user: "user feedback" };

function itemView(it) {
  let title = TITLES[it.kind] || it.title || it.kind;
  if (it.kind === "tool") title = `tool ${it.title}`;
  if (it.kind === "api") {
    const p = it.params || {};
    title = `API request · ${num(p.tokensIn)} in / ${num(p.tokensOut)} out · ${usd(p.cost)}${p.cancelReason ? " · " + p.cancelReason : ""}`;
    it = { ...it, params: null };
  }
  const head = h("div", { class: "head" }, h("b", { text: title }), it.t !== null && it.t !== undefined ? h("span", { text: secs(it.t) }) : null);
  const el = h("div", { class: `item ${it.kind}`, "data-at": it.at }, head);
  if (it.depth) el.classList.add("nested"), (el.style.marginLeft = `${it.depth * 28}px`);
  if (it.params && Object.keys(it.params).length) {
    el.append(h("dl", { class: "params" }, ...Object.entries(it.params).flatMap(([k, v]) => [h("dt", { text: k }),
      h("dd", {}, typeof v === "string" && v.includes("\n") ? h("pre", { text: v }) : h("span", { text: typeof v === "string" ? v : JSON.stringify(v) }))])));
  }
  if (it.text) el.append(h("pre", { text: it.text }));
  return el;
}

// The workspace diff against its template, one coloured line each (taken before the check ran).
function diffView(d) {
  const kind = (line) => line.startsWith("+++ ") || line.startsWith("--- ") ? "meta"
    : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : line.startsWith("@@") ? "hunk"
    : line.startsWith(" ") || line === "" ? "ctx" : "meta";
  const lines = d.text.replace(/\n$/, "").split("\n");
  return h("div", {},
    h("pre", { class: "out diff", id: "diff" }, ...lines.map((l) => h("span", { class: kind(l), text: l || " " }))),
    d.cut ? h("p", { class: "muted", text: "Only the first part of the diff is shown." }) : null);
}

async function attemptPage(name, n) {
  const base = `/api/runs/${enc(name)}/attempts/${n}`;
  crumbs(h("a", { href: link(`/run/${enc(name)}`), text: "/ " + name }), `attempt ${n}`);
  const a = await api(base);
  const r = a.record, m = r.metrics || {};
  const list = h("div", { id: "transcript" });
  const more = h("button", {}, "show more");
  const info = h("span", { class: "muted" });
  // Pages by byte offset: a search hit opens the transcript where the hit is.
  const hit = Number(pageQuery().get("at") || 0);
  let at = BUNDLE ? 0 : hit, shown = 0;
  async function loadMore() {
    const page = await api(`${base}/transcript?at=${at}&limit=200`);
    list.append(...page.items.map(itemView));
    shown += page.items.length;
    const read = page.next === null ? page.bytes : page.next;
    info.textContent = `${num(shown)} messages shown · ${page.bytes ? Math.round((100 * read) / page.bytes) : 100}% of the transcript read`;
    more.hidden = page.next === null;
    if (page.next !== null) at = page.next;
  }
  more.addEventListener("click", () => loadMore().catch(fail));
  const card = (v, label) => h("div", { class: "card" }, h("b", { text: v }), h("span", { text: label }));
  const chk = a.check || {};
  const usage = a.transcript ? a.transcript.usage : [];
  show(
    h("h1", { text: `${r.case_id} · ${r.model_id} · repeat ${r.repeat} · attempt ${r.attempt}` }),
    h("div", { class: "cards" }, card(r.status, "status"), card(r.passed === null ? "–" : r.passed ? "passed" : "failed", "check"),
      card(usd(m.cost_usd), "cost"), card(`${num(m.tokens_in)} / ${num(m.tokens_out)}`, "tokens in / out"), card(secs(r.duration_s), "duration"),
      card(num(m.api_retries), "API retries"), card(num(m.subtasks), "subtasks")),
    h("p", {}, h("b", { text: "Reason: " }), r.reason || "–", r.error ? h("span", { class: "muted", text: ` · ${r.error}` }) : null),
    h("div", { class: "charts" }, ...[lineChart("Cost over time", usage, (p) => p[1], usd), lineChart("Tokens over time", usage, (p) => p[2], num)].filter(Boolean)),
    h("h2", { text: "Transcript" }),
    a.transcript ? list : h("p", { class: "muted", text: "No transcript was written for this attempt." }),
    a.transcript ? h("div", { class: "pager" }, more, info) : null,
    h("h2", { text: "What the agent changed" }),
    a.diff ? diffView(a.diff) : h("p", { class: "muted", text: "No change to the workspace was recorded." }),
    h("h2", { text: "Check" }),
    h("table", { id: "check" }, h("tbody", {},
      h("tr", {}, h("th", { text: "command" }), h("td", {}, h("code", { text: typeof chk.command === "string" ? chk.command : JSON.stringify(chk.command ?? null) }))),
      h("tr", {}, h("th", { text: "exit code" }), h("td", { text: String(chk.exit_code ?? "–") })),
      h("tr", {}, h("th", { text: "passed" }), h("td", { text: String(chk.passed ?? "–") })),
      h("tr", {}, h("th", { text: "timed out" }), h("td", { text: String(chk.timed_out ?? "–") })),
      h("tr", {}, h("th", { text: "duration" }), h("td", { text: secs(chk.duration) })))),
    h("h2", { text: "Check output (tail)" }), h("pre", { class: "out", id: "check-output", text: chk.output_tail || "(none)" }),
    r.host_output_tail ? h("div", {}, h("h2", { text: "Host output (tail)" }), h("pre", { class: "out", text: r.host_output_tail })) : null);
  if (a.transcript) await loadMore();
  const found = hit ? list.querySelector(`[data-at="${hit}"]`) : null;  // where a search hit is
  if (found) { found.classList.add("found"); requestAnimationFrame(() => found.scrollIntoView({ block: "center" })); }
  document.body.dataset.ready = "1";
}

// A running attempt: its conversation as its live transcript grows (a later state of a message replaces
// the one shown), until its record is written; then the page becomes the attempt's own.
async function runningPage(name, attemptName) {
  const base = `/api/runs/${enc(name)}/running/${enc(attemptName)}`;
  crumbs(h("a", { href: `/run/${enc(name)}`, text: "/ " + name }), attemptName.replace(/\.jsonl$/, ""));
  const a = await api(base);
  if (a.index !== null) return toAttempt(name, a.index);
  const hd = a.header || {};
  const list = h("div", { id: "transcript" }), shownBy = new Map();
  const count = h("span", { class: "muted", text: "waiting for the first message…" });
  const elapsed = h("b", { text: "–" });
  const card = (v, label) => h("div", { class: "card" }, v instanceof Node ? v : h("b", { text: v }), h("span", { text: label }));
  show(
    h("h1", { text: `${hd.case_id} · ${hd.model_id} · repeat ${hd.repeat} · attempt ${hd.attempt}` }, " ", h("span", { class: "pill running", text: "running" })),
    h("div", { class: "cards" }, card("running", "status"), card(when(hd.started_at), "started"), card(elapsed, "running for"), hd.node ? card(hd.node.slice(0, 12), "node") : null),
    h("h2", { text: "Transcript (live)" }), list, h("div", { class: "pager" }, count));
  setLive(true);
  const since = () => { elapsed.textContent = hd.started_at ? secs((Date.now() - Date.parse(hd.started_at)) / 1000) : "–"; };
  since();
  const tick = setInterval(since, 500);
  const es = new EventSource(`${base}/stream`);
  const stop = () => { clearInterval(tick); es.close(); setLive(false); };
  es.addEventListener("items", (e) => {
    for (const it of JSON.parse(e.data).items) {
      const el = itemView(it), old = it.key ? shownBy.get(it.key) : null;
      if (old) old.replaceWith(el); else list.append(el);
      if (it.key) shownBy.set(it.key, el);
    }
    count.textContent = `${num(list.children.length)} messages so far`;
    document.body.dataset.live = String(list.children.length);
  });
  es.addEventListener("ended", (e) => { stop(); toAttempt(name, JSON.parse(e.data).index).catch(fail); });
  es.addEventListener("gone", () => { stop(); count.textContent = "The run stopped before this attempt was recorded."; });
  document.body.dataset.ready = "1";
}

function toAttempt(name, index) {
  history.replaceState(null, "", `/run/${enc(name)}/attempt/${index}`);
  return attemptPage(name, index);
}

// ------------------------------------------------------------------------------------------ compare

// A run is named by its directory (what the URL and the runs page use); a copied run whose manifest
// still carries another run id says so, else two copies of one run would read "A: r1 · B: r1".
function runName(dir, runId) {
  const a = h("a", { href: link(`/run/${enc(dir)}`), text: dir });
  return runId && runId !== dir ? h("span", {}, a, h("span", { class: "muted", text: ` (run id ${runId})` })) : a;
}

const COMPARE_PAGE = 500;

async function comparePage() {
  const q = pageQuery();
  const [a, b] = [q.get("a") || "", q.get("b") || ""];
  const start = Math.max(0, Number(q.get("start")) || 0);
  crumbs(`compare ${a} ↔ ${b}`);
  // The changed pairs come a page at a time (a compare of big runs may list many thousands).
  const c = await api(`/api/compare?a=${enc(a)}&b=${enc(b)}&start=${start}&limit=${COMPARE_PAGE}`);
  const at = (s) => link(`/compare?a=${enc(a)}&b=${enc(b)}&start=${s}`);
  const shown = c.changes.length ? `${num(start + 1)}–${num(start + c.changes.length)} of ${num(c.changes_count)}` : "";
  const pager = c.changes_count > c.changes.length ? h("p", { class: "pager" },
    BUNDLE || start === 0 ? null : h("a", { href: at(Math.max(0, start - COMPARE_PAGE)), text: "‹ prev" }), ` ${shown} `,
    BUNDLE || start + c.changes.length >= c.changes_count ? null : h("a", { href: at(start + COMPARE_PAGE), text: "next ›" })) : null;
  const line = (label, g) => h("tr", {}, h("td", { text: label }), h("td", { class: "num", text: num(g.paired) }),
    h("td", { class: "num", text: pct(g.pass_rate_a) }), h("td", { class: "num", text: pct(g.pass_rate_b) }),
    h("td", { class: "num", text: g.pass_rate_delta === null ? "–" : (g.pass_rate_delta >= 0 ? "+" : "") + (100 * g.pass_rate_delta).toFixed(1) + " pt" }),
    h("td", { class: "num", text: usd(g.cost_usd_a) }), h("td", { class: "num", text: usd(g.cost_usd_b) }), h("td", { class: "num", text: usd(g.cost_usd_delta) }),
    h("td", { class: "num", text: secs(g.duration_p50_a) }), h("td", { class: "num", text: secs(g.duration_p50_b) }),
    h("td", { text: Object.entries(g.flips).map(([k, v]) => `${k} ${v}`).join(", ") || "–" }));
  const heads = ["", "paired", "pass A", "pass B", "delta", "cost A", "cost B", "delta", "p50 A", "p50 B", "flips"];
  show(
    h("h1", { text: "Compare" }),
    h("p", {}, "A: ", runName(a, c.a.run_id), " · B: ", runName(b, c.b.run_id)),
    h("table", { id: "compare" }, h("thead", {}, h("tr", {}, ...heads.map((x) => h("th", { text: x })))),
      h("tbody", {}, line("total", c.totals), ...Object.entries(c.by_model).map(([m, g]) => line(`model ${m}`, g)))),
    h("h2", { text: `${num(c.changes_count)} changed outcome(s)` }), pager,
    h("table", { id: "changes" }, h("thead", {}, h("tr", {}, ...["case", "model", "repeat", "change", "status A", "status B", "cost delta", "duration delta", "config"].map((x) => h("th", { text: x })))),
      h("tbody", {}, ...c.changes.map((x) => h("tr", {}, h("td", { text: x.case_id }), h("td", { text: x.model_id }), h("td", { class: "num", text: x.repeat }),
        h("td", { text: x.change }), h("td", { text: x.status_a }), h("td", { text: x.status_b }), h("td", { class: "num", text: usd(x.cost_delta) }),
        h("td", { class: "num", text: secs(x.duration_delta) }), h("td", { text: x.config }))))),
    c.only_a_count || c.only_b_count ? h("p", { class: "muted", text: `only in A: ${num(c.only_a_count)} · only in B: ${num(c.only_b_count)}` }) : null);
  document.body.dataset.ready = "1";
}

// ------------------------------------------------------------------------------------------ router

function route() {
  const path = BUNDLE ? (location.hash.slice(1) || "/").split("?")[0] : location.pathname;
  const p = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (p.length === 0) return runsPage();
  if (p[0] === "compare") return comparePage();
  if (p[0] === "run" && p.length === 2) return runPage(p[1]);
  if (p[0] === "run" && p.length === 4 && p[2] === "attempt") return attemptPage(p[1], Number(p[3]));
  if (p[0] === "run" && p.length === 4 && p[2] === "running" && !BUNDLE) return runningPage(p[1], p[3]);
  throw new Error("no such page");
}

window.addEventListener("DOMContentLoaded", () => {
  if (BUNDLE) document.querySelector(".brand").setAttribute("href", "#/");
  route().catch(fail);
});
window.addEventListener("hashchange", () => { if (BUNDLE) route().catch(fail); });
