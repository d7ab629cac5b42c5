// emguard operator console: plain JS, no framework, no network beyond this server.
// The map is drawn on a canvas in the engine's projected metres (x east, y north).
// Who is logged in decides what is enabled: the server refuses anything else anyway (403/409/422),
// the buttons only spare the operator a refusal.
"use strict";

const LEVEL_RANK = { info: 0, warning: 1, alarm: 2, critical: 3 };
const TOKEN_KEY = "emguard-token";
const state = {
  alerts: new Map(), selected: null, zones: [], detail: null, skew: 0,
  token: "", me: null, source: null, closeConfirm: false,
};

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.token) h["Authorization"] = "Bearer " + state.token;
  return h;
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const r = await fetch(path, opts);
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) {
    const err = new Error((body && body.error) || r.status + " " + r.statusText);
    err.status = r.status;
    throw err;
  }
  return body;
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function isClosed(a) { return a.state === "closed" || a.state === "resolved"; }
function needsAck(a) { return a.state === "open" || a.state === "escalated"; }

// the centre's queue: not closed first, then unacknowledged, then level, then nearest deadline
function queueKey(a) {
  return [isClosed(a) ? 1 : 0, needsAck(a) ? 0 : 1, -LEVEL_RANK[a.level], Date.parse(a.deadline), a.alert_id];
}

function cmp(a, b) {
  const ka = queueKey(a), kb = queueKey(b);
  for (let i = 0; i < ka.length; i++) { if (ka[i] < kb[i]) return -1; if (ka[i] > kb[i]) return 1; }
  return 0;
}

function countdown(a) {
  if (isClosed(a)) return "—";
  const s = Math.round((Date.parse(a.deadline) - (Date.now() + state.skew)) / 1000);
  const sign = s < 0 ? "-" : "";
  const m = Math.floor(Math.abs(s) / 60), r = Math.abs(s) % 60;
  return sign + m + ":" + String(r).padStart(2, "0");
}

function renderQueue() {
  const showClosed = document.getElementById("show-closed").checked;
  const rows = [...state.alerts.values()].filter(a => showClosed || !isClosed(a)).sort(cmp);
  const body = document.querySelector("#queue tbody");
  body.replaceChildren();
  for (const a of rows) {
    const tr = el("tr", { "data-alert-id": a.alert_id });
    if (isClosed(a)) tr.classList.add("closed");
    if (needsAck(a)) tr.classList.add("unacked");
    if (a.alert_id === state.selected) tr.classList.add("selected");
    const lv = el("td"); lv.append(el("span", { class: "level level-" + a.level }, a.level)); tr.append(lv);
    const cond = el("td", { class: "condition condition-" + (a.condition || "active") }, a.condition || "active");
    tr.append(el("td", {}, a.kind), el("td", { class: "state" }, a.state), cond,
      el("td", { class: "claimed" }, a.claimed_by || ""),
      el("td", {}, (a.subject || "") + (a.protected_person ? " → " + a.protected_person : "")));
    const dl = el("td", { class: "deadline" }, countdown(a));
    if (needsAck(a) && Date.parse(a.deadline) <= Date.now() + state.skew) dl.classList.add("overdue");
    tr.append(dl);
    tr.addEventListener("click", () => select(a.alert_id));
    body.append(tr);
  }
  const open = [...state.alerts.values()].filter(a => !isClosed(a));
  document.getElementById("count").textContent =
    "(" + open.length + " open, " + open.filter(needsAck).length + " unacknowledged)";
}

// The snapshot is merged with what the stream brought meanwhile: a change published while the
// request was under way must not be overwritten by the older snapshot (change_seq orders them).
async function loadAlerts() {
  const body = await api("/api/alerts?limit=1000");
  state.skew = Date.parse(body.now) - Date.now();
  const fresh = new Map(body.alerts.map(a => [a.alert_id, a]));
  for (const [id, a] of state.alerts) {
    const f = fresh.get(id);
    if (!f || (a.change_seq || 0) > (f.change_seq || 0)) fresh.set(id, a);
  }
  state.alerts = fresh;
  renderQueue();
}

async function select(id) {
  state.selected = id;
  state.closeConfirm = false;
  renderQueue();
  try {
    state.detail = await api("/api/alerts/" + encodeURIComponent(id));
  } catch (e) {
    document.getElementById("action-msg").textContent = e.message;
    return;
  }
  renderDetail();
}

function fillSelect(select, values, placeholder) {
  const current = select.value;
  const options = placeholder === undefined ? [] : [el("option", { value: "" }, placeholder)];
  for (const v of values) options.push(el("option", { value: v }, v.replace(/_/g, " ")));
  select.replaceChildren(...options);
  if (values.includes(current)) select.value = current;
}

function renderDetail() {
  const d = state.detail;
  document.getElementById("detail-empty").hidden = !!d;
  document.getElementById("detail").hidden = !d;
  if (!d) return;
  document.getElementById("detail-id").textContent = d.alert_id;
  const dlist = document.getElementById("detail-fields");
  dlist.replaceChildren();
  const fields = [["kind", d.kind], ["level", d.level], ["highest level", d.peak_level !== d.level ? d.peak_level : null],
    ["state", d.state], ["condition", d.condition], ["cleared at", d.cleared_at], ["claimed by", d.claimed_by],
    ["escalated to", d.escalated_to], ["outcome", d.outcome], ["closed by", d.closed_by],
    ["order", d.order], ["subject", d.subject], ["protected person", d.protected_person], ["zone", d.zone],
    ["distance", d.distance_m === null ? null : d.distance_m + " m"], ["certainty", d.certainty],
    ["device time", d.device_time], ["deadline", d.deadline], ["detail", d.detail]];
  for (const [k, v] of fields) {
    if (v === null || v === undefined || v === "") continue;
    dlist.append(el("dt", {}, k), el("dd", { "data-field": k }, v));
  }
  const notes = document.getElementById("notes");
  notes.replaceChildren(...(d.notes || []).map(n => el("li", {}, `${n.at} ${n.by} (${n.action}): ${n.note}`)));
  const hist = document.getElementById("history");
  hist.replaceChildren(...d.history.map(h => el("li", {},
    `${h.at} ${h.action || h.state} → ${h.state} (${h.level}) by ${h.by}` +
    (h.target ? " to " + h.target : "") + (h.outcome ? " outcome " + h.outcome : "") + (h.note ? ": " + h.note : ""))));
  const procedure = d.procedure || { escalation_targets: [], outcomes: [] };
  fillSelect(document.getElementById("target"), procedure.escalation_targets);
  fillSelect(document.getElementById("outcome"), procedure.outcomes, "outcome…");
  renderActions();
  drawMap(d);
}

// Only what this user may do now is enabled; a read-only user sees every action disabled.
function renderActions() {
  const d = state.detail, me = state.me;
  const ids = ["btn-claim", "btn-ack", "btn-escalate", "btn-note", "btn-close", "note", "target", "outcome",
    "btn-close-confirm"];
  const enabled = new Set();
  if (d && me && me.may_act && !isClosed(d)) {
    const mine = !d.claimed_by || d.claimed_by === me.name || me.may_take_over;
    if (d.claimed_by !== me.name && (!d.claimed_by || me.may_take_over)) enabled.add("btn-claim");
    if (mine && d.state !== "acknowledged") enabled.add("btn-ack");
    if (mine) ["btn-escalate", "target", "btn-close", "outcome", "btn-close-confirm"].forEach(i => enabled.add(i));
    enabled.add("btn-note"); enabled.add("note");
  }
  for (const id of ids) document.getElementById(id).disabled = !enabled.has(id);
  document.getElementById("confirm-close").hidden = !(state.closeConfirm && enabled.has("btn-close"));
}

async function act(action, extra) {
  const d = state.detail;
  if (!d) return;
  const msg = document.getElementById("action-msg");
  msg.textContent = "";
  const body = Object.assign({ note: document.getElementById("note").value }, extra || {});
  try {
    const updated = await api(`/api/alerts/${encodeURIComponent(d.alert_id)}/${action}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    state.alerts.set(updated.alert_id, updated);
    document.getElementById("note").value = "";
    await select(updated.alert_id);
  } catch (e) {
    msg.textContent = e.message;
  }
}

// Closing asks for an outcome (and a note for alarm and above), and a confirmation for a critical.
function requestClose() {
  const d = state.detail;
  if (!d) return;
  const msg = document.getElementById("action-msg");
  const outcome = document.getElementById("outcome").value;
  const note = document.getElementById("note").value.trim();
  const needs = d.close_needs || [];
  if ((needs.includes("outcome") && !outcome) || (needs.includes("note") && !note)) {
    msg.textContent = "To close this " + d.peak_level + " alert choose an outcome and write a note saying what was done.";
    return;
  }
  if (d.peak_level === "critical" && !state.closeConfirm) {
    state.closeConfirm = true;
    renderActions();
    return;
  }
  state.closeConfirm = false;
  act("close", outcome ? { outcome: outcome } : {});
}

// --- map ------------------------------------------------------------------------------
function drawMap(d) {
  const canvas = document.getElementById("map");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const wanted = new Set(d.map.order_zones);
  const zones = state.zones.filter(z => z.order === d.order && wanted.has(z.zone));
  const pts = [];
  for (const track of Object.values(d.map.tracks)) for (const p of track) pts.push([p.x, p.y]);
  const area = d.map.victim_area;
  if (area) { pts.push([area.x - area.alert_m, area.y - area.alert_m], [area.x + area.alert_m, area.y + area.alert_m]); }
  for (const z of zones) for (const poly of z.xy) for (const p of poly[0]) pts.push(p);
  if (!pts.length) { ctx.fillText("no positions known", 10, 20); return; }
  let [minx, miny, maxx, maxy] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const [x, y] of pts) { minx = Math.min(minx, x); maxx = Math.max(maxx, x); miny = Math.min(miny, y); maxy = Math.max(maxy, y); }
  const pad = 30, span = Math.max(maxx - minx, maxy - miny, 100);
  const scale = Math.min((canvas.width - 2 * pad) / span, (canvas.height - 2 * pad) / span);
  const cx = (minx + maxx) / 2, cy = (miny + maxy) / 2;
  const X = x => canvas.width / 2 + (x - cx) * scale;
  const Y = y => canvas.height / 2 - (y - cy) * scale;   // north up
  for (const z of zones) {
    const excl = z.kind === "exclusion";
    ctx.fillStyle = excl ? "rgba(245,101,101,0.30)" : "rgba(56,161,105,0.18)";
    ctx.strokeStyle = excl ? "#c53030" : "#38a169";
    for (const poly of z.xy) {
      ctx.beginPath();
      for (const ring of poly) ring.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
      ctx.fill("evenodd"); ctx.stroke();
    }
    const [lx, ly] = z.xy[0][0][0];
    ctx.fillStyle = "#1d2330"; ctx.fillText(z.zone, X(lx) + 3, Y(ly) - 3);
  }
  if (area) {
    ctx.setLineDash([6, 4]); ctx.strokeStyle = "#2b6cb0";
    ctx.beginPath(); ctx.arc(X(area.x), Y(area.y), area.alert_m * scale, 0, 2 * Math.PI); ctx.stroke();
    ctx.setLineDash([]);
  }
  const subjectDevices = new Set();
  for (const [dev, track] of Object.entries(d.map.tracks)) {
    const victim = area && track.length && track[track.length - 1].x === area.x && track[track.length - 1].y === area.y;
    if (!victim) subjectDevices.add(dev);
    const colour = victim ? "#2b6cb0" : "#c53030";
    ctx.strokeStyle = colour; ctx.fillStyle = colour;
    ctx.beginPath();
    track.forEach((p, i) => (i ? ctx.lineTo(X(p.x), Y(p.y)) : ctx.moveTo(X(p.x), Y(p.y))));
    ctx.stroke();
    for (const p of track) { ctx.beginPath(); ctx.arc(X(p.x), Y(p.y), 2.5, 0, 2 * Math.PI); ctx.fill(); }
    const last = track[track.length - 1];
    if (last) { ctx.fillText(dev, X(last.x) + 5, Y(last.y) + 12); }
  }
  // scale bar
  const bar = Math.pow(10, Math.floor(Math.log10(span / 4)));
  ctx.strokeStyle = "#1d2330"; ctx.fillStyle = "#1d2330";
  ctx.beginPath(); ctx.moveTo(10, canvas.height - 12); ctx.lineTo(10 + bar * scale, canvas.height - 12); ctx.stroke();
  ctx.fillText(bar >= 1000 ? bar / 1000 + " km" : bar + " m", 12, canvas.height - 16);
  canvas.dataset.drawn = String(zones.length) + ":" + Object.keys(d.map.tracks).length;
}

// --- devices --------------------------------------------------------------------------
async function loadDevices() {
  let body;
  try { body = await api("/api/devices"); } catch (e) { return; }
  const tbody = document.querySelector("#devices tbody");
  tbody.replaceChildren(...body.devices.map(dv => {
    const tr = el("tr", { "data-device": dv.device });
    const seen = dv.seconds_since_seen === null ? "never" : Math.round(dv.seconds_since_seen) + " s ago";
    tr.append(el("td", {}, dv.device), el("td", {}, (dv.role || "?") + " " + (dv.person || "")),
      el("td", {}, seen), el("td", {}, dv.accuracy_m === null ? "" : dv.accuracy_m + " m " + (dv.src || "")),
      el("td", {}, dv.battery_pct === null ? "" : dv.battery_pct + " %" + (dv.charging ? " ⚡" : "")),
      el("td", {}, dv.strap || ""), el("td", { class: dv.silent ? "silent" : "" }, dv.silent ? "SILENT" : "ok"));
    return tr;
  }));
}

// --- live updates ---------------------------------------------------------------------
function connectStream() {
  const conn = document.getElementById("conn");
  if (state.source) state.source.close();
  const source = new EventSource("/api/stream" + (state.token ? "?access_token=" + encodeURIComponent(state.token) : ""));
  state.source = source;
  source.onopen = () => { conn.textContent = "live"; conn.className = "conn on"; loadAlerts().catch(() => {}); };
  source.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn off"; };
  source.addEventListener("alert", ev => {
    const msg = JSON.parse(ev.data);
    if (msg.change === "resync") { loadAlerts().catch(() => {}); return; }
    const known = state.alerts.get(msg.alert.alert_id);
    if (!known || (msg.alert.change_seq || 0) >= (known.change_seq || 0)) state.alerts.set(msg.alert.alert_id, msg.alert);
    renderQueue();
    if (msg.alert.alert_id === state.selected) select(state.selected);
  });
}

function showUser() {
  const who = document.getElementById("whoami");
  const me = state.me;
  who.textContent = me ? me.name + " (" + me.role + ")" : "not logged in";
  document.getElementById("login").hidden = !!me && !!state.token;
  document.getElementById("btn-logout").hidden = !me || !state.token;
  renderActions();
}

// Who this token is: on success load everything with it and follow the stream; on a refusal
// stay logged out with nothing shown (a read-only user is logged in, with actions disabled).
async function login(token) {
  state.token = token;
  const msg = document.getElementById("login-msg");
  msg.textContent = "";
  try {
    state.me = await api("/api/me");
  } catch (e) {
    state.me = null;
    if (token) msg.textContent = e.status === 401 ? "Token not accepted." : e.message;
    state.token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    logoutView();
    return false;
  }
  if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
  showUser();
  try { state.zones = (await api("/api/zones")).zones; } catch (e) { state.zones = []; }
  await loadAlerts().catch(e => { document.getElementById("action-msg").textContent = e.message; });
  await loadDevices();
  connectStream();
  return true;
}

function logoutView() {
  if (state.source) { state.source.close(); state.source = null; }
  const conn = document.getElementById("conn");
  conn.textContent = "logged out"; conn.className = "conn off";
  state.alerts = new Map(); state.selected = null; state.detail = null; state.zones = [];
  document.querySelector("#devices tbody").replaceChildren();
  renderQueue();
  renderDetail();
  showUser();
}

function logout() {
  state.token = ""; state.me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  document.getElementById("token").value = "";
  logoutView();
}

async function start() {
  for (const id of ["btn-claim", "btn-ack", "btn-note"]) {
    const b = document.getElementById(id);
    b.addEventListener("click", () => act(b.dataset.action));
  }
  document.getElementById("btn-escalate").addEventListener("click",
    () => act("escalate", { target: document.getElementById("target").value }));
  document.getElementById("btn-close").addEventListener("click", requestClose);
  document.getElementById("btn-close-confirm").addEventListener("click", requestClose);
  document.getElementById("btn-close-cancel").addEventListener("click", () => { state.closeConfirm = false; renderActions(); });
  document.getElementById("show-closed").addEventListener("change", renderQueue);
  document.getElementById("login").addEventListener("submit", ev => {
    ev.preventDefault();
    login(document.getElementById("token").value.trim());
  });
  document.getElementById("btn-logout").addEventListener("click", logout);
  setInterval(renderQueue, 1000);
  setInterval(() => { if (state.me) loadDevices(); }, 5000);
  // a token from this tab's session, else none: a server without tokens (demo) lets everyone in
  const ok = await login(sessionStorage.getItem(TOKEN_KEY) || "");
  if (!ok) logoutView();
}

start();
