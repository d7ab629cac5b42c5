// emguard operator console: plain JS, no framework, no network beyond this server and the
// configured map tile host (/console/config.json; "none" offline). The map is Leaflet, served by
// emguard from `npm ci`'s node_modules; without it the console works and says it has no map.
// Times are shown in the centre's local time (Europe/Amsterdam) with human durations.
// Who is logged in decides what is enabled: the server refuses anything else anyway (403/409/422),
// the buttons only spare the operator a refusal.
"use strict";

const LEVEL_RANK = { info: 0, warning: 1, alarm: 2, critical: 3 };
const TOKEN_KEY = "emguard-token";
const MUTE_KEY = "emguard-muted";
const state = {
  alerts: new Map(), selected: null, zones: [], detail: null, skew: 0,
  token: "", me: null, source: null, closeConfirm: false, promptConfirm: false,
  config: null, map: null, layers: null, devices: [], fresh: new Set(), cursor: null,
  audio: null, flash: null, loginSeq: 0,
};
// what tests (and curious operators) can read back: beeps tried, the map's latest markers
window.emguardBeeps = 0;
window.emguardMap = { map: null, latest: {} };

// --- time -----------------------------------------------------------------------------
const TZ = "Europe/Amsterdam";
const TIME_FMT = new Intl.DateTimeFormat("nl-NL", { timeZone: TZ, hour: "2-digit", minute: "2-digit", second: "2-digit" });
const DATE_FMT = new Intl.DateTimeFormat("nl-NL", { timeZone: TZ, day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
const DAY_FMT = new Intl.DateTimeFormat("nl-NL", { timeZone: TZ, day: "numeric", month: "short", year: "numeric" });

function serverNow() { return Date.now() + state.skew; }

// every alert summary says how far its deadline is by the server's clock: keep in step with it
// between queue loads (countdowns and "2 min ago" are the server's, not this PC's)
function syncClock(a) {
  if (a && typeof a.seconds_to_deadline === "number") {
    state.skew = Date.parse(a.deadline) - a.seconds_to_deadline * 1000 - Date.now();
  }
}

// "14:03:07" today, "18 nov 14:03" otherwise: local time, never UTC with milliseconds
function localTime(iso) {
  if (!iso) return "";
  const t = new Date(iso);
  if (isNaN(t)) return iso;
  return Math.abs(serverNow() - t.getTime()) < 12 * 3600e3 ? TIME_FMT.format(t) : DATE_FMT.format(t);
}

// "2 min ago", "in 4 min", "just now"
function human(iso) {
  if (!iso) return "";
  const s = Math.round((Date.parse(iso) - serverNow()) / 1000);
  const a = Math.abs(s);
  let txt;
  if (a < 10) return "just now";
  if (a < 90) txt = a + " s";
  else if (a < 5400) txt = Math.round(a / 60) + " min";
  else if (a < 48 * 3600) txt = Math.round(a / 3600) + " h";
  else txt = Math.round(a / 86400) + " days";
  return s < 0 ? txt + " ago" : "in " + txt;
}

function when(iso) { return iso ? localTime(iso) + " (" + human(iso) + ")" : ""; }

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
    const raised = el("td", { class: "raised" }, human(a.raised_at));
    raised.title = "raised " + localTime(a.raised_at);
    tr.append(raised);
    const dl = el("td", { class: "deadline" }, countdown(a));
    dl.title = "deadline " + localTime(a.deadline);
    const left = Date.parse(a.deadline) - serverNow();
    if (needsAck(a) && left <= 0) dl.classList.add("overdue");
    else if (needsAck(a) && left < 120e3) dl.classList.add("due-red");
    else if (needsAck(a) && left < 300e3) dl.classList.add("due-amber");
    tr.append(dl);
    if (state.fresh.has(a.alert_id)) tr.classList.add("fresh");
    if (a.alert_id === state.cursor) tr.classList.add("cursor");
    tr.addEventListener("click", () => { state.cursor = a.alert_id; select(a.alert_id); });
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
  state.fresh.delete(id);  // seen: it stops flashing
  state.orderShown = null;  // the map follows the alert again
  state.closeConfirm = false;
  state.promptConfirm = false;
  renderQueue();
  try {
    state.detail = await api("/api/alerts/" + encodeURIComponent(id));
    syncClock(state.detail);
  } catch (e) {
    document.getElementById("action-msg").textContent = e.message;
    return;
  }
  renderDetail();
}

// positions move while an alert is open: re-read it now and then (keeps form input and zoom)
async function refreshDetail() {
  const id = state.selected;
  if (!id) return;
  try {
    const d = await api("/api/alerts/" + encodeURIComponent(id));
    if (state.selected === id) { syncClock(d); state.detail = d; renderDetail(); }
  } catch (e) { /* the next refresh tries again */ }
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
  if (!d) {
    if (state.layers) { state.layers.clearLayers(); state.labels.clearLayers(); }
    state.timePoints = [];
    window.emguardMap.latest = {};
    state.fittedFor = null;
    document.querySelector("#coords tbody").replaceChildren();
    document.getElementById("map-title").textContent = "";
    return;
  }
  if (!state.orderShown) {
    document.getElementById("map-title").textContent = d.kind + " · " + (d.subject || "") +
      (d.protected_person ? " → " + d.protected_person : "");
  }
  document.getElementById("detail-id").textContent = d.alert_id;
  const dlist = document.getElementById("detail-fields");
  dlist.replaceChildren();
  const fields = [["kind", d.kind], ["level", d.level], ["highest level", d.peak_level !== d.level ? d.peak_level : null],
    ["state", d.state], ["condition", d.condition], ["cleared at", when(d.cleared_at)], ["claimed by", d.claimed_by],
    ["escalated to", d.escalated_to], ["outcome", d.outcome], ["closed by", d.closed_by],
    ["order", d.order], ["subject", d.subject], ["protected person", d.protected_person], ["zone", d.zone],
    ["distance", d.distance_m === null ? null : d.distance_m + " m"], ["certainty", d.certainty],
    ["device time", when(d.device_time)], ["deadline", when(d.deadline)], ["detail", d.detail],
    // a NATS worker's centre-wide view says what only the alert's owner holds (docs/nats.md)
    ["not shown here", d.map && d.map.unavailable ? d.map.unavailable : null]];
  for (const [k, v] of fields) {
    if (v === null || v === undefined || v === "") continue;
    dlist.append(el("dt", {}, k), el("dd", { "data-field": k }, v));
  }
  const notes = document.getElementById("notes");
  notes.replaceChildren(...(d.notes || []).map(n => el("li", {}, `${localTime(n.at)} ${n.by} (${n.action}): ${n.note}`)));
  const hist = document.getElementById("history");
  // one line per change: a level change says from and to ("alarm → critical"), not its state
  hist.replaceChildren(...d.history.map((h, i) => el("li", {},
    `${localTime(h.at)} ` +
    (h.action === "level" && i > 0
      ? `level ${d.history[i - 1].level} → ${h.level} (${h.state})`
      : `${h.action || h.state} → ${h.state} (${h.level})`) +
    ` by ${h.by}` +
    (h.target ? " to " + h.target : "") + (h.outcome ? " outcome " + h.outcome : "") + (h.note ? ": " + h.note : ""))));
  const procedure = d.procedure || { escalation_targets: [], outcomes: [] };
  fillSelect(document.getElementById("target"), procedure.escalation_targets);
  fillSelect(document.getElementById("outcome"), procedure.outcomes, "outcome…");
  renderActions();
  drawMap(d);
  renderCoords(d);
  renderCase(d);
}

// Only what this user may do now is enabled; a read-only user sees every action disabled.
function renderActions() {
  const d = state.detail, me = state.me;
  const ids = ["btn-claim", "btn-ack", "btn-escalate", "btn-note", "btn-close", "note", "target", "outcome",
    "btn-close-confirm", "btn-prompt", "btn-prompt-confirm"];
  const enabled = new Set();
  if (d && me && me.may_act && !isClosed(d)) {
    const mine = !d.claimed_by || d.claimed_by === me.name || me.may_take_over;
    if (d.claimed_by !== me.name && (!d.claimed_by || me.may_take_over)) enabled.add("btn-claim");
    if (mine && d.state !== "acknowledged") enabled.add("btn-ack");
    if (mine) ["btn-escalate", "target", "btn-close", "outcome", "btn-close-confirm"].forEach(i => enabled.add(i));
    if (mine && hasAnkleMonitor(d)) ["btn-prompt", "btn-prompt-confirm"].forEach(i => enabled.add(i));
    enabled.add("btn-note"); enabled.add("note");
  }
  for (const id of ids) document.getElementById(id).disabled = !enabled.has(id);
  document.getElementById("confirm-close").hidden = !(state.closeConfirm && enabled.has("btn-close"));
  document.getElementById("confirm-prompt").hidden = !(state.promptConfirm && enabled.has("btn-prompt"));
}

// A prompt goes to the subject's ankle monitor: only for an alert whose subject wears one.
function hasAnkleMonitor(d) {
  const subject = d.case && d.case.subject;
  return Boolean(subject && subject.devices && subject.devices.length);
}

// "Ask him to call the centre": contact_centre on his ankle monitor, after a confirmation (its
// timing is the operator's choice, and a prompt as she comes near can tell him she is near).
function requestPrompt() {
  if (!state.detail) return;
  if (!state.promptConfirm) {
    state.promptConfirm = true;
    renderActions();
    return;
  }
  state.promptConfirm = false;
  renderActions();
  act("prompt");
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

// --- map (Leaflet) --------------------------------------------------------------------
// Leaflet is loaded only when the server has it (config.leaflet): a missing `npm ci` must
// cost the map, not the console.
function loadAsset(tag, attrs) {
  return new Promise((resolve, reject) => {
    const e = el(tag, attrs);
    e.addEventListener("load", resolve);
    e.addEventListener("error", () => reject(new Error("could not load " + (attrs.src || attrs.href))));
    document.head.append(e);
  });
}

async function loadMapLibrary() {
  const msg = document.getElementById("map-msg");
  try { state.config = await api("/console/config.json"); } catch (e) { state.config = null; }
  const base = state.config && state.config.leaflet;
  if (!base) {
    msg.textContent = "No map: the server has no Leaflet files (run `npm ci` where emguard is installed). Coordinates below still hold.";
    document.getElementById("map").hidden = true;
    return;
  }
  try {
    await Promise.all([loadAsset("link", { rel: "stylesheet", href: base + "leaflet.css" }),
      loadAsset("script", { src: base + "leaflet.js" })]);
  } catch (e) {
    msg.textContent = "No map: " + e.message;
    document.getElementById("map").hidden = true;
    return;
  }
  if (state.detail) renderDetail();
}

function ensureMap() {
  if (state.map || !window.L) return state.map;
  const tiles = (state.config && state.config.tiles) || {};
  const map = L.map("map", { zoomControl: true, attributionControl: true, maxZoom: tiles.max_zoom || 19 });
  map.attributionControl.setPrefix("Leaflet");
  if (tiles.url) {
    L.tileLayer(tiles.url, {
      maxZoom: tiles.max_zoom || 19, attribution: tiles.attribution || "",
      referrerPolicy: tiles.referrer_policy || "no-referrer",
    }).addTo(map);
  } else {
    map.attributionControl.addAttribution(tiles.attribution || "no background map");
    document.getElementById("map").classList.add("no-tiles");
  }
  L.control.scale({ metric: true, imperial: false, maxWidth: 160 }).addTo(map);
  map.setView([52.1, 5.1], 8);
  state.map = map;
  state.layers = L.layerGroup().addTo(map);
  state.labels = L.layerGroup().addTo(map);
  map.on("zoomend", placeTimeLabels);
  window.emguardMap.map = map;
  return map;
}

const COARSE = new Set(["wifi", "cell", "network", "lbs"]);
function isCoarse(p) { return COARSE.has(String(p.src || "").toLowerCase()); }

function roleOf(d, dev) {
  const l = (d.map.latest || []).find(x => x.device === dev);
  return l && l.role === "protected" ? "protected" : "subject";
}

// time labels on the track, newest first, leaving out those that would overlap one already
// placed at this zoom (every point still tells its time on hover)
function placeTimeLabels() {
  if (!state.map) return;
  state.labels.clearLayers();
  const placed = [];
  for (const p of state.timePoints || []) {
    const at = state.map.latLngToContainerPoint([p.lat, p.lon]);
    if (placed.some(q => Math.abs(q.x - at.x) < 64 && Math.abs(q.y - at.y) < 16)) continue;
    placed.push(at);
    L.tooltip({ permanent: true, direction: "right", className: "time-label", offset: [6, 0] })
      .setLatLng([p.lat, p.lon]).setContent(localTime(p.t)).addTo(state.labels);
  }
}

function drawMap(d) {
  const wanted = new Set(d.map.order_zones);
  const zones = state.zones.filter(z => z.order === d.order && wanted.has(z.zone));
  document.getElementById("map").dataset.drawn = String(zones.length) + ":" + Object.keys(d.map.tracks).length;
  const map = ensureMap();
  if (!map || state.orderShown) return;  // an order's zones stay until an alert is opened
  state.layers.clearLayers();
  window.emguardMap.latest = {};
  const bounds = [], zoneBounds = [], labels = [];  // fit to the people; to the zones only when none is known
  for (const z of zones) {
    const excl = z.kind === "exclusion";
    const latlngs = z.rings.map(poly => poly.map(ring => ring.map(([lon, lat]) => [lat, lon])));
    const layer = L.polygon(latlngs, {
      className: "zone zone-" + z.kind,
      color: excl ? "#c53030" : "#2f855a", weight: z.zone === d.map.zone ? 3 : 2,
      fillColor: excl ? "#f56565" : "#38a169", fillOpacity: excl ? 0.25 : 0.12,
    }).bindTooltip(z.zone + " (" + z.kind + (z.active ? "" : ", not active now") + ")");
    layer.addTo(state.layers);
    for (const poly of latlngs) for (const p of poly[0]) zoneBounds.push(p);
  }
  const area = d.map.victim_area;
  if (area) {
    L.circle([area.lat, area.lon], { radius: area.alert_m, color: "#2b6cb0", weight: 2, dashArray: "6 4", fill: false })
      .bindTooltip("victim area: alert " + area.alert_m + " m").addTo(state.layers);
    if (area.warn_m) L.circle([area.lat, area.lon], { radius: area.warn_m, color: "#2b6cb0", weight: 1, dashArray: "2 6", fill: false })
      .bindTooltip("warning " + area.warn_m + " m").addTo(state.layers);
    const r = (area.warn_m || area.alert_m) / 111320;  // her whole warning circle in view
    bounds.push([area.lat - r, area.lon], [area.lat + r, area.lon]);
  }
  for (const [dev, track] of Object.entries(d.map.tracks)) {
    const role = roleOf(d, dev);
    const colour = role === "protected" ? "#2b6cb0" : "#c53030";
    L.polyline(track.map(p => [p.lat, p.lon]), { color: colour, weight: 2, opacity: 0.8 }).addTo(state.layers);
    track.forEach((p, i) => {
      const coarse = isCoarse(p);
      if (p.acc) {
        L.circle([p.lat, p.lon], {
          radius: p.acc, weight: 1, color: coarse ? "#b7791f" : colour, dashArray: coarse ? "4 4" : null,
          fillColor: coarse ? "#ecc94b" : colour, fillOpacity: coarse ? 0.12 : 0.05,
          className: coarse ? "acc-coarse" : "acc-gnss",
        }).addTo(state.layers);
      }
      const dot = L.circleMarker([p.lat, p.lon], { radius: 3, color: colour, weight: 1, fillOpacity: 0.9 })
        .bindTooltip(localTime(p.t) + " · ±" + p.acc + " m " + (p.src || ""));
      dot.addTo(state.layers);
      labels.push(p);
      bounds.push([p.lat, p.lon]);
    });
  }
  for (const l of d.map.latest || []) {
    const who = (l.role === "protected" ? "protected person " : "subject ") + (l.person || "") + " · " + l.device;
    const icon = L.divIcon({ className: "pos pos-" + (l.role === "protected" ? "protected" : "subject"), iconSize: [18, 18] });
    const marker = L.marker([l.lat, l.lon], { icon: icon, title: who, zIndexOffset: 1000 })
      .bindTooltip(who + " — latest " + localTime(l.t) + " (" + human(l.t) + ")");
    marker.addTo(state.layers);
    window.emguardMap.latest[l.device] = marker;
  }
  map.invalidateSize();
  // fit once per alert: a refresh must not undo the operator's own zoom and pan
  const fit = bounds.length ? bounds : zoneBounds;
  if (fit.length && state.fittedFor !== d.alert_id) {
    map.fitBounds(L.latLngBounds(fit).pad(0.15), { maxZoom: 17 });
    state.fittedFor = d.alert_id;
  }
  state.timePoints = labels.sort((a, b) => Date.parse(b.t) - Date.parse(a.t));
  placeTimeLabels();
}

// --- coordinates for dispatch ---------------------------------------------------------
function coordsText(l) {
  return `${l.role === "protected" ? "protected person" : "subject"} ${l.person || ""} (${l.device}) at ${localTime(l.t)}: ` +
    `WGS84 ${l.lat.toFixed(6)}, ${l.lon.toFixed(6)}; RD ${l.rd_x.toFixed(0)}, ${l.rd_y.toFixed(0)}; ±${l.acc} m ${l.src || ""}`;
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "copied";
  } catch (e) {
    button.textContent = "select + Ctrl+C";
  }
  button.dataset.copied = text;
  setTimeout(() => { button.textContent = "copy"; }, 2000);
}

function renderCoords(d) {
  const body = document.querySelector("#coords tbody");
  body.replaceChildren(...(d.map.latest || []).map(l => {
    const tr = el("tr", { "data-device": l.device, class: isCoarse(l) ? "coarse" : "" });
    const btn = el("button", { type: "button", class: "copy" }, "copy");
    btn.addEventListener("click", () => copyText(coordsText(l), btn));
    const last = el("td"); last.append(btn);
    tr.append(el("td", {}, (l.role === "protected" ? "protected " : "subject ") + (l.person || "") + " · " + l.device),
      el("td", {}, when(l.t)),
      el("td", { class: "wgs84" }, l.lat.toFixed(6) + ", " + l.lon.toFixed(6)),
      el("td", { class: "rd" }, l.rd_x.toFixed(2) + ", " + l.rd_y.toFixed(2)),
      el("td", {}, "±" + l.acc + " m " + (l.src || "")), last);
    return tr;
  }));
}

// --- case panel -----------------------------------------------------------------------
function personBlock(title, p) {
  const box = el("div", { class: "person" });
  box.append(el("h4", {}, title));
  if (!p) { box.append(el("p", {}, "—")); return box; }
  const dl = el("dl");
  for (const [k, v] of [["id", p.id], ["name", p.name], ["alias", p.alias], ["phone", p.phone], ["address", p.address],
    ["devices", (p.devices || []).join(", ")]]) {
    if (v) dl.append(el("dt", {}, k), el("dd", { "data-field": title + " " + k }, v));
  }
  box.append(dl);
  const health = state.devices.filter(dv => (p.devices || []).includes(dv.device));
  for (const dv of health) {
    box.append(el("p", { class: "dev-health" + (dv.silent ? " silent" : "") },
      dv.device + ": last seen " + (dv.last_seen ? human(dv.last_seen) : "never") +
      (dv.battery_pct === null ? "" : ", battery " + dv.battery_pct + " %") +
      (dv.strap ? ", strap " + dv.strap : "") + (dv.silent ? ", SILENT" : "")));
  }
  return box;
}

function renderCase(d) {
  const c = d.case || {};
  const box = document.getElementById("case");
  const parts = [personBlock("subject", c.subject), personBlock("protected person", c.protected_person)];
  const o = c.order;
  const ob = el("div", { class: "person" });
  ob.append(el("h4", {}, "order"));
  if (o) {
    const dl = el("dl");
    const zones = [...o.exclusion_zones.map(z => z + " (exclusion)"), ...o.inclusion_zones.map(z => z + " (inclusion)")];
    for (const [k, v] of [["id", o.id], ["legal basis", o.legal_basis.replace(/_/g, " ") + (o.legal_max_days ? " (max " + o.legal_max_days + " days)" : "")],
      ["valid", DAY_FMT.format(new Date(o.valid_from)) + " – " + DAY_FMT.format(new Date(o.valid_until)) + (o.in_force ? "" : " (not in force)")],
      ["zones", zones.join(", ")],
      ["proximity", o.proximity.map(p => p.protected_person + ": alert " + p.alert_m + " m, warn " + p.warn_m + " m").join("; ")]]) {
      if (v) dl.append(el("dt", {}, k), el("dd", {}, v));
    }
    ob.append(dl);
  } else ob.append(el("p", {}, "—"));
  parts.push(ob);
  const proc = d.procedure || { escalation_targets: [], outcomes: [] };
  const pb = el("div", { class: "person" });
  pb.append(el("h4", {}, "procedure (" + d.kind + ")"));
  if ((proc.script || []).length) {
    const ol = el("ol", { class: "script" });
    for (const step of proc.script) ol.append(el("li", {}, step));
    pb.append(ol);
  }
  pb.append(el("p", {}, "escalate to: " + proc.escalation_targets.join(" → ")));
  pb.append(el("p", {}, "close with: " + proc.outcomes.map(x => x.replace(/_/g, " ")).join(", ") +
    ((d.close_needs || []).length ? " (and a note)" : "")));
  parts.push(pb);
  box.replaceChildren(...parts);
}

// --- attention: sound, title flash, highlight ------------------------------------------
function muted() { return localStorage.getItem(MUTE_KEY) === "1"; }

function showMute() {
  const b = document.getElementById("btn-mute");
  b.textContent = muted() ? "sound off" : "sound on";
  b.setAttribute("aria-pressed", muted() ? "true" : "false");
}

// an AudioContext may start only after a user gesture: made on the first click or key
function unlockAudio() {
  if (state.audio) return;
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (Ctx) state.audio = new Ctx();
}

function beep(level) {
  window.emguardBeeps += 1;
  document.body.dataset.beeps = String(window.emguardBeeps);
  if (muted() || !state.audio) return;
  const ctx = state.audio;
  const pulses = level === "critical" ? 3 : 2;
  for (let i = 0; i < pulses; i++) {
    const osc = ctx.createOscillator(), gain = ctx.createGain();
    osc.frequency.value = level === "critical" ? 1040 : 880;
    gain.gain.value = 0.2;
    osc.connect(gain).connect(ctx.destination);
    const t0 = ctx.currentTime + i * 0.3;
    osc.start(t0); osc.stop(t0 + 0.18);
  }
}

const BASE_TITLE = document.title;
function flashTitle() {
  const fresh = [...state.fresh].map(id => state.alerts.get(id)).filter(a => a && needsAck(a));
  if (!fresh.length) { document.title = BASE_TITLE; return; }
  const on = document.title.startsWith("⚠");
  document.title = on ? BASE_TITLE : "⚠ " + fresh.length + " NEW " + fresh[0].level.toUpperCase() + " — emguard";
}

// a new alarm or critical, or an alert rising to one: sound, highlight, flash
function attend(msg, known) {
  const a = msg.alert;
  const high = LEVEL_RANK[a.level] >= LEVEL_RANK.alarm;
  const rose = !known || LEVEL_RANK[known.level] < LEVEL_RANK[a.level];
  // ... and an alarm nobody acknowledged in time (the engine escalated it on its deadline)
  const lapsed = msg.change === "escalate" && a.state === "escalated";
  if (high && needsAck(a) && (lapsed || (rose && (msg.change === "raised" || msg.change === "level")))) {
    state.fresh.add(a.alert_id);
    beep(a.level);
  }
}

// --- system health --------------------------------------------------------------------
async function loadHealth() {
  const box = document.getElementById("health");
  let doc;
  try {
    const r = await fetch("/readyz");
    doc = await r.json();
  } catch (e) {
    box.textContent = "engine unreachable"; box.className = "health bad"; return;
  }
  const mark = ok => (ok ? "✓" : "✗");
  box.textContent = `broker ${mark(doc.broker_connected && doc.publishing_connected)} · store ${mark(doc.store_connected)} · ` +
    `lag ${doc.lag_s} s · dead letters ${doc.dead_letters === undefined ? "?" : doc.dead_letters}`;
  box.title = doc.problems.length ? "problems: " + doc.problems.join("; ") : "ready";
  box.className = "health " + (doc.ready ? "ok" : "bad");
  box.dataset.ready = String(doc.ready);
  if (doc.problems.length) box.textContent += " · " + doc.problems.join("; ");
}

// --- keyboard -------------------------------------------------------------------------
function onKey(ev) {
  const tag = (ev.target && ev.target.tagName) || "";
  if (["INPUT", "SELECT", "TEXTAREA", "BUTTON"].includes(tag) || ev.altKey || ev.ctrlKey || ev.metaKey) return;
  const ids = [...document.querySelectorAll("#queue tbody tr")].map(tr => tr.dataset.alertId);
  if (!ids.length) return;
  let i = ids.indexOf(state.cursor || state.selected);
  if (ev.key === "ArrowDown" || ev.key === "j") i = Math.min(ids.length - 1, i + 1);
  else if (ev.key === "ArrowUp" || ev.key === "k") i = Math.max(0, i < 0 ? 0 : i - 1);
  else if (ev.key === "Enter") { if (i >= 0) select(ids[i]); ev.preventDefault(); return; }
  else return;
  ev.preventDefault();
  state.cursor = ids[Math.max(0, i)];
  renderQueue();
  const row = document.querySelector(`#queue tbody tr[data-alert-id="${CSS.escape(state.cursor)}"]`);
  if (row) row.scrollIntoView({ block: "nearest" });
}

// --- devices --------------------------------------------------------------------------
async function loadDevices() {
  let body;
  try { body = await api("/api/devices"); } catch (e) { return; }
  state.devices = body.devices;
  const tbody = document.querySelector("#devices tbody");
  // a NATS worker: partitions whose owner has not published a device snapshot yet are said
  const note = [];
  if (body.unavailable) {
    const tr = el("tr");
    tr.append(el("td", { colspan: "7", class: "unavailable" }, body.unavailable));
    note.push(tr);
  }
  tbody.replaceChildren(...note, ...body.devices.map(dv => {
    const tr = el("tr", { "data-device": dv.device });
    const seen = dv.last_seen === null ? "never" : when(dv.last_seen);
    tr.append(el("td", {}, dv.device), el("td", {}, (dv.role || "?") + " " + (dv.person || "")),
      el("td", {}, seen), el("td", {}, dv.accuracy_m === null ? "" : dv.accuracy_m + " m " + (dv.src || "")),
      el("td", {}, dv.battery_pct === null ? "" : dv.battery_pct + " %" + (dv.charging ? " ⚡" : "")),
      el("td", {}, dv.strap || ""), el("td", { class: dv.silent ? "silent" : "" }, dv.silent ? "SILENT" : "ok"));
    return tr;
  }));
}

// --- orders: what the centre enforces, with validity and zones --------------------------
async function loadOrders() {
  let body;
  try { body = await api("/api/orders"); } catch (e) { return; }
  const tbody = document.querySelector("#orders tbody");
  tbody.replaceChildren(...body.orders.map(o => {
    const tr = el("tr", { "data-order": o.id, class: o.in_force ? "" : "closed" });
    tr.title = "show its zones on the map";
    tr.addEventListener("click", () => showOrder(o.id));
    const zones = [...o.exclusion_zones.map(z => z + " (excl.)"), ...o.inclusion_zones.map(z => z + " (incl.)")];
    tr.append(el("td", {}, o.id), el("td", {}, o.subject), el("td", {}, o.legal_basis.replace(/_/g, " ")),
      el("td", {}, DAY_FMT.format(new Date(o.valid_from)) + " – " + DAY_FMT.format(new Date(o.valid_until)) +
        " (ends " + human(o.valid_until) + ")"),
      el("td", {}, o.in_force ? "yes" : "no"), el("td", {}, zones.join(", ")),
      el("td", {}, o.proximity.map(p => p.protected_person + " " + p.alert_m + " m").join(", ")));
    return tr;
  }));
}

// an order's zones on the map (from the orders table): what the centre enforces, where
function showOrder(oid) {
  const map = ensureMap();
  document.getElementById("map-title").textContent = "order " + oid;
  state.orderShown = oid;
  if (!map) return;
  state.layers.clearLayers(); state.labels.clearLayers();
  state.timePoints = []; window.emguardMap.latest = {};
  state.fittedFor = null;  // the next alert opened is fitted again
  const pts = [];
  for (const z of state.zones.filter(x => x.order === oid)) {
    const excl = z.kind === "exclusion";
    const latlngs = z.rings.map(poly => poly.map(ring => ring.map(([lon, lat]) => [lat, lon])));
    L.polygon(latlngs, {
      className: "zone zone-" + z.kind, color: excl ? "#c53030" : "#2f855a", weight: 2,
      fillColor: excl ? "#f56565" : "#38a169", fillOpacity: excl ? 0.25 : 0.12,
    }).bindTooltip(z.zone + " (" + z.kind + (z.active ? "" : ", not active now") + ")", { permanent: true })
      .addTo(state.layers);
    for (const poly of latlngs) for (const p of poly[0]) pts.push(p);
  }
  document.getElementById("map").dataset.order = oid;
  if (pts.length) map.fitBounds(L.latLngBounds(pts).pad(0.15), { maxZoom: 17 });
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
    syncClock(msg.alert);
    attend(msg, known);
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
  // only the latest login counts: the page's own attempt at start (no token) must not log out
  // an operator who typed a token and logged in while it was under way
  const attempt = ++state.loginSeq;
  state.token = token;
  const msg = document.getElementById("login-msg");
  msg.textContent = "";
  let me;
  try {
    me = await api("/api/me");
  } catch (e) {
    if (attempt !== state.loginSeq) return false;
    state.me = null;
    if (token) msg.textContent = e.status === 401 ? "Token not accepted." : e.message;
    state.token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    logoutView();
    return false;
  }
  if (attempt !== state.loginSeq) return false;
  state.me = me;
  if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
  showUser();
  try { state.zones = (await api("/api/zones")).zones; } catch (e) { state.zones = []; }
  await loadAlerts().catch(e => { document.getElementById("action-msg").textContent = e.message; });
  await loadDevices();
  await loadOrders();
  connectStream();
  return true;
}

function logoutView() {
  if (state.source) { state.source.close(); state.source = null; }
  const conn = document.getElementById("conn");
  conn.textContent = "logged out"; conn.className = "conn off";
  state.alerts = new Map(); state.selected = null; state.detail = null; state.zones = [];
  state.fresh.clear(); state.cursor = null; state.devices = [];
  document.querySelector("#devices tbody").replaceChildren();
  document.querySelector("#orders tbody").replaceChildren();
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
  document.getElementById("btn-prompt").addEventListener("click", requestPrompt);
  document.getElementById("btn-prompt-confirm").addEventListener("click", requestPrompt);
  document.getElementById("btn-prompt-cancel").addEventListener("click", () => { state.promptConfirm = false; renderActions(); });
  document.getElementById("show-closed").addEventListener("change", renderQueue);
  document.getElementById("login").addEventListener("submit", ev => {
    ev.preventDefault();
    login(document.getElementById("token").value.trim());
  });
  document.getElementById("btn-logout").addEventListener("click", logout);
  setInterval(renderQueue, 1000);
  setInterval(flashTitle, 1000);
  setInterval(loadHealth, 5000);
  loadHealth();
  showMute();
  document.getElementById("btn-mute").addEventListener("click", () => {
    localStorage.setItem(MUTE_KEY, muted() ? "0" : "1"); showMute();
  });
  document.addEventListener("pointerdown", unlockAudio);
  document.addEventListener("keydown", unlockAudio);
  document.addEventListener("keydown", onKey);
  loadMapLibrary();  // in parallel: the queue must not wait for the map
  setInterval(() => { if (state.me) { loadDevices(); refreshDetail(); } }, 5000);
  setInterval(() => { if (state.me) loadOrders(); }, 60000);
  // a token from this tab's session, else none: a server without tokens (demo) lets everyone in
  const seq = state.loginSeq;
  const ok = await login(sessionStorage.getItem(TOKEN_KEY) || "");
  if (!ok && state.loginSeq === seq + 1) logoutView();
}

start();
