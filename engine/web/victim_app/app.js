// emguard victim app: warnings for her, her position and her panic to the monitoring centre.
// Plain JS, no framework, nothing from another origin. Talks only to this server's /victim/api/.
// Kept on the phone (localStorage): the device token and id, settings, the sequence counter and
// what is not yet sent. Never kept: warnings, positions once sent, anything about him.
"use strict";

(function () {
  const TEXT = window.EMG_TEXT;
  const SERVER_NL = window.EMG_SERVER_NL;
  const NEUTRAL = window.EMG_NEUTRAL;

  const KEY = {
    token: "emg.token", device: "emg.device", seq: "emg.seq", unsent: "emg.unsent",
    lang: "emg.lang", discreet: "emg.discreet", interval: "emg.interval", hidden: "emg.hidden",
  };
  const LEVEL_RANK = { info: 0, warning: 1, alarm: 2, critical: 3 };
  const DEFAULT_INTERVAL_S = 60; // the engine's normal interval until it says otherwise
  const MIN_INTERVAL_S = 5;
  const MAX_INTERVAL_S = 900;
  const MOVE_M = 25; // a move this far (beyond accuracy) is sent at once, not at the next interval
  const HOLD_MS = 1500; // panic: held this long, so a pocket or a child does not raise it
  const RETURN_HOLD_MS = 2000; // neutral page: hold the temperature this long to come back
  const BATCH = 500; // fixes per upload
  const MAX_UNSENT = 5000; // oldest fixes dropped beyond this (never a panic)
  const RETRY_MAX_MS = 60000;
  const ALERT_REPEAT_MS = { alarm: 3000, critical: 1500 };
  const ALERT_MAX_MS = 60000; // sound and vibration stop by themselves after this

  const $ = (id) => document.getElementById(id);

  const store = {
    get(k) { try { return localStorage.getItem(k); } catch (e) { return null; } },
    set(k, v) { try { localStorage.setItem(k, v); } catch (e) { /* full or blocked */ } },
    del(k) { try { localStorage.removeItem(k); } catch (e) { /* blocked */ } },
  };

  const app = {
    lang: store.get(KEY.lang) || ((navigator.language || "nl").toLowerCase().startsWith("nl") ? "nl" : "en"),
    discreet: store.get(KEY.discreet) !== "0",
    token: store.get(KEY.token),
    device: store.get(KEY.device),
    warnings: new Map(), // alert_id -> what she should see; memory only
    cleared: null, // the last "all clear", until she taps OK or a new warning comes
    conn: "connecting",
    interval: readInterval(),
    lastPos: null, lastRecorded: null, lastSentAcc: null, posDenied: false,
    watchId: null, pollTimer: null, battery: null,
    flushing: false, flushAgain: false, flushTimer: null, retryMs: 0,
    stream: null, streamTimer: null, streamRetryMs: 0,
    panicSeq: null, panicState: "",
    sounding: null, soundTimer: null, soundUntil: 0, audio: null,
    disguised: false,
    settingsOpen: false,
  };

  // --- text -------------------------------------------------------------------------------
  function t(key, vars) {
    let s = (TEXT[app.lang] && TEXT[app.lang][key]) || TEXT.en[key] || key;
    for (const [k, v] of Object.entries(vars || {})) s = s.replace("{" + k + "}", String(v));
    return s;
  }

  function server(text) {
    if (!text) return "";
    return app.lang === "nl" && SERVER_NL[text] ? SERVER_NL[text] : text;
  }

  function setText(id, text) { $(id).textContent = text || ""; }

  // --- render -----------------------------------------------------------------------------
  function topWarning() {
    let top = null;
    for (const w of app.warnings.values()) {
      if (!top || LEVEL_RANK[w.level] > LEVEL_RANK[top.level] ||
          (w.level === top.level && (w.t || "") > (top.t || ""))) top = w;
    }
    return top;
  }

  function render() {
    if (app.disguised) return;
    document.documentElement.lang = app.lang;
    for (const e of document.querySelectorAll("[data-t]")) e.textContent = t(e.dataset.t);
    for (const e of document.querySelectorAll("[data-t-title]")) e.title = t(e.dataset.tTitle);
    for (const e of document.querySelectorAll("[data-t-label]")) e.setAttribute("aria-label", t(e.dataset.tLabel));
    $("lang").textContent = t("lang_other");
    const linked = Boolean(app.token && app.device);
    const conn = linked ? app.conn : "unlinked";
    $("conn").dataset.state = conn;
    setText("conn", t("conn_" + conn));
    applyAppearance();

    $("setup").hidden = linked || app.settingsOpen;
    $("main").hidden = !linked || app.settingsOpen;
    $("settings").hidden = !app.settingsOpen;

    const top = topWarning();
    $("silence").hidden = !app.sounding;
    $("clear-ok").hidden = true;
    if (top) {
      document.body.dataset.level = top.level;
      setText("level-text", t(top.kind === "panic" ? "level_panic" : "level_" + top.level));
      setText("message", server(top.message));
      setText("advice", server(top.advice));
      setText("near", top.near ? t("near", { band: server(top.near) }) : "");
      setText("status", top.status ? (TEXT[app.lang]["status_" + top.status] ? t("status_" + top.status) : server(top.statusText)) : "");
    } else if (app.conn !== "live") {
      // silence is not safety: without the stream no warning can reach her
      document.body.dataset.level = "unknown";
      setText("level-text", t("level_unknown"));
      setText("message", t("level_unknown_text"));
      for (const id of ["advice", "near", "status"]) setText(id, "");
    } else if (app.cleared) {
      document.body.dataset.level = "clear";
      setText("level-text", t("level_clear"));
      setText("message", t("status_" + app.cleared.status));
      setText("advice", "");
      setText("near", "");
      setText("status", "");
      $("clear-ok").hidden = false;
    } else {
      document.body.dataset.level = "none";
      setText("level-text", t("level_none"));
      setText("message", t("level_none_text"));
      for (const id of ["advice", "near", "status"]) setText(id, "");
    }
    document.body.dataset.sounding = app.sounding || "";

    setText("panic-state", app.panicState ? t(app.panicState) : "");
    const unsent = queue().filter((i) => i.kind === "fix").length;
    document.body.dataset.unsent = String(unsent);
    setText("pos-text", app.posDenied ? t("pos_denied")
      : app.lastSentAcc !== null ? t("pos_sent", { acc: Math.round(app.lastSentAcc) }) : t("pos_waiting"));
    setText("unsent-text", unsent ? t("pos_unsent", { n: unsent }) : "");
    setText("interval-text", t("interval", { s: intervalS() }));
    $("interval-text").dataset.seconds = String(intervalS());
    $("discreet").checked = app.discreet;
    setText("device-id", app.device ? t("device", { id: app.device }) : "");
  }

  function applyAppearance() {
    const icon = app.discreet ? "icon-weather" : "icon-shield";
    const manifest = app.discreet ? "manifest.webmanifest" : "manifest-plain.webmanifest";
    if ($("manifest").getAttribute("href") !== manifest) $("manifest").setAttribute("href", manifest);
    $("favicon").setAttribute("href", icon + ".svg");
    $("touch-icon").setAttribute("href", icon + "-192.png");
    document.title = app.discreet ? t("name_discreet") : t("name_plain");
  }

  function setConn(state) {
    if (app.conn !== state) { app.conn = state; render(); }
  }

  // --- warnings ---------------------------------------------------------------------------
  function applyWarning(p, quiet) {
    if (!p || !p.alert_id) return;
    const w = app.warnings.get(p.alert_id) || { alert_id: p.alert_id, level: null };
    if (p.status) {
      if (p.status === "handled" || p.status === "ended") {
        app.warnings.delete(p.alert_id);
        if (!app.warnings.size) { app.cleared = { status: p.status }; stopAlerting(); }
        return;
      }
      w.status = p.status;
      w.statusText = p.message;
      if (!w.level) w.level = p.level;
    } else {
      const rose = !w.level || LEVEL_RANK[p.level] > LEVEL_RANK[w.level];
      w.level = p.level;
      w.kind = p.kind || w.kind || null;
      w.message = p.message;
      w.advice = p.advice;
      w.near = p.near || null;
      w.t = p.t;
      app.cleared = null;
      // her own panic's confirmation is silent: a beep could give away where she is hiding
      if (rose && !quiet && w.kind !== "panic") alertUser(p.level);
    }
    app.warnings.set(p.alert_id, w);
  }

  function applyState(doc) {
    if (doc.device && doc.device !== app.device) { app.device = doc.device; store.set(KEY.device, doc.device); }
    const before = topWarning();
    const seen = new Map(app.warnings);
    app.warnings = new Map();
    for (const p of doc.warnings || []) {
      const old = seen.get(p.alert_id);
      applyWarning(p, Boolean(old && LEVEL_RANK[old.level] >= LEVEL_RANK[p.level]));
    }
    if (!app.warnings.size && before) stopAlerting();
    if (doc.command) applyCommand(doc.command);
  }

  function applyCommand(c) {
    if (!c || c.instruction !== "set_interval") return;
    const s = Math.min(MAX_INTERVAL_S, Math.max(MIN_INTERVAL_S, Number(c.interval_s) || DEFAULT_INTERVAL_S));
    app.interval = { s: s, until: c.until ? Date.parse(c.until) : null };
    store.set(KEY.interval, JSON.stringify(app.interval));
    schedulePoll();
  }

  function readInterval() {
    try {
      const v = JSON.parse(store.get(KEY.interval) || "null");
      if (v && typeof v.s === "number") return v;
    } catch (e) { /* ignore */ }
    return { s: DEFAULT_INTERVAL_S, until: null };
  }

  function intervalS() {
    const i = app.interval;
    return i.until && Date.now() > i.until ? DEFAULT_INTERVAL_S : i.s;
  }

  // --- sound and vibration ----------------------------------------------------------------
  function unlockAudio() {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return;
    if (!app.audio) app.audio = new Ctx();
    if (app.audio.state === "suspended") app.audio.resume().catch(() => {});
  }

  function beep(level) {
    const ctx = app.audio;
    if (!ctx || ctx.state !== "running") return;
    const tones = level === "critical" ? [988, 740, 988, 740] : [880, 660];
    let at = ctx.currentTime;
    for (const f of tones) {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = "square";
      osc.frequency.value = f;
      gain.gain.setValueAtTime(0.25, at);
      gain.gain.exponentialRampToValueAtTime(0.001, at + 0.22);
      osc.connect(gain).connect(ctx.destination);
      osc.start(at);
      osc.stop(at + 0.24);
      at += 0.25;
    }
  }

  function vibrate(pattern) {
    // browsers refuse vibration until she has touched the page once (and log an error)
    const active = !navigator.userActivation || navigator.userActivation.hasBeenActive;
    if (navigator.vibrate && active) navigator.vibrate(pattern);
  }

  function alertUser(level) {
    if (LEVEL_RANK[level] < LEVEL_RANK.alarm || app.disguised) return; // hidden: stay silent
    app.settingsOpen = false; // a warning is never left behind the settings
    stopAlerting();
    app.sounding = level;
    app.soundUntil = Date.now() + ALERT_MAX_MS;
    const once = () => {
      if (!app.sounding || Date.now() > app.soundUntil) { stopAlerting(); render(); return; }
      beep(level);
      vibrate(level === "critical" ? [600, 150, 600, 150, 600] : [400, 200, 400]);
      app.soundTimer = setTimeout(once, ALERT_REPEAT_MS[level]);
    };
    once();
  }

  function stopAlerting() {
    clearTimeout(app.soundTimer);
    app.soundTimer = null;
    app.sounding = null;
    vibrate(0);
  }

  // --- position ---------------------------------------------------------------------------
  function startPosition() {
    if (app.watchId !== null || !("geolocation" in navigator)) return;
    app.watchId = navigator.geolocation.watchPosition(onPosition, onPositionError,
      { enableHighAccuracy: true, maximumAge: 0, timeout: 60000 });
    schedulePoll();
    if (navigator.getBattery) {
      navigator.getBattery().then((b) => {
        const read = () => { app.battery = Math.round(b.level * 100); };
        read();
        b.addEventListener("levelchange", read);
      }).catch(() => {});
    }
  }

  function schedulePoll() {
    clearTimeout(app.pollTimer);
    if (app.watchId === null) return;
    app.pollTimer = setTimeout(() => {
      // standing still, watchPosition may stay quiet: still report once per interval
      navigator.geolocation.getCurrentPosition(onPosition, onPositionError,
        { enableHighAccuracy: true, maximumAge: 0, timeout: 30000 });
      schedulePoll();
    }, intervalS() * 1000);
  }

  function onPosition(pos) {
    app.posDenied = false;
    app.lastPos = pos;
    const last = app.lastRecorded;
    const c = pos.coords;
    const due = !last || pos.timestamp - last.t >= intervalS() * 1000 - 500 ||
      metres(last.lat, last.lon, c.latitude, c.longitude) > Math.max(MOVE_M, c.accuracy || 0);
    if (due) record(pos);
  }

  function onPositionError(err) {
    if (err && err.code === 1) { app.posDenied = true; render(); }
  }

  function metres(lat1, lon1, lat2, lon2) {
    const r = 6371008.8, k = Math.PI / 180;
    const x = (lon2 - lon1) * k * Math.cos(((lat1 + lat2) / 2) * k);
    const y = (lat2 - lat1) * k;
    return Math.hypot(x, y) * r;
  }

  function round(v, digits) { const m = Math.pow(10, digits); return Math.round(v * m) / m; }

  function nextSeq() {
    // contiguous per device; a fresh install starts at the epoch second, above anything sent before
    const last = parseInt(store.get(KEY.seq) || "0", 10) || 0;
    const seq = last > 0 ? last + 1 : Math.floor(Date.now() / 1000);
    store.set(KEY.seq, String(seq));
    return seq;
  }

  function record(pos) {
    if (!app.device) return;
    const c = pos.coords;
    const fix = {
      v: 1, device: app.device, seq: nextSeq(), t: new Date(pos.timestamp).toISOString(),
      lat: round(c.latitude, 7), lon: round(c.longitude, 7), acc: Math.max(1, round(c.accuracy || 0, 1)),
    };
    if (c.speed !== null && Number.isFinite(c.speed)) fix.spd = round(c.speed, 2);
    if (c.heading !== null && Number.isFinite(c.heading)) fix.hdg = round(c.heading, 1);
    if (app.battery !== null) fix.batt = app.battery;
    app.lastRecorded = { t: pos.timestamp, lat: c.latitude, lon: c.longitude };
    enqueue({ kind: "fix", body: fix });
    flush();
  }

  // --- what is not yet sent: the only record on the phone ------------------------------------
  let unsent = null; // read from localStorage once, then kept in step with it

  function queue() {
    if (unsent === null) {
      try { const q = JSON.parse(store.get(KEY.unsent) || "[]"); unsent = Array.isArray(q) ? q : []; } catch (e) { unsent = []; }
    }
    return unsent;
  }

  function saveQueue(q) {
    unsent = q;
    if (q.length) store.set(KEY.unsent, JSON.stringify(q)); else store.del(KEY.unsent);
  }

  function enqueue(item) {
    let q = [...queue(), item];
    let over = q.length - MAX_UNSENT;
    if (over > 0) q = q.filter((i) => i.kind !== "fix" || over-- <= 0);
    saveQueue(q);
    render();
  }

  function removeSent(kind, seqs) {
    const gone = new Set(seqs);
    saveQueue(queue().filter((i) => i.kind !== kind || !gone.has(i.body.seq)));
  }

  async function post(path, body) {
    const r = await fetch("api/" + path, {
      method: "POST", cache: "no-store",
      headers: { "content-type": "application/json", authorization: "Bearer " + app.token },
      body: JSON.stringify(body),
    });
    if (r.ok) return "ok";
    if (r.status === 401 || r.status === 403) return "refused";
    if (r.status === 400 || r.status === 413 || r.status === 415 || r.status === 422) return "drop";
    throw new Error("server answered " + r.status);
  }

  async function flush() {
    if (app.flushing) { app.flushAgain = true; return; }
    if (!app.token || !app.device) return;
    if (navigator.onLine === false) { setConn("offline"); return; }
    clearTimeout(app.flushTimer);
    app.flushing = true;
    let retry = false;
    try {
      for (;;) {
        const q = queue();
        const panic = q.find((i) => i.kind === "panic"); // the alarm first: it matters most
        const batch = panic ? [panic] : q.filter((i) => i.kind === "fix").slice(0, BATCH);
        if (!batch.length) break;
        const result = panic ? await post("panic", panic.body) : await post("fixes", batch.map((i) => i.body));
        if (result === "refused") { retry = true; app.retryMs = RETRY_MAX_MS; break; }
        if (result === "drop") console.warn("the server refused these for good", batch);
        removeSent(panic ? "panic" : "fix", batch.map((i) => i.body.seq));
        if (panic && panic.body.seq === app.panicSeq && result === "ok") app.panicState = "panic_sent";
        if (!panic && result === "ok") app.lastSentAcc = batch[batch.length - 1].body.acc;
        app.retryMs = 0;
        render();
      }
    } catch (e) {
      retry = true;
      app.retryMs = Math.min(RETRY_MAX_MS, Math.max(2000, app.retryMs * 2));
      if (app.panicSeq !== null && queue().some((i) => i.kind === "panic")) app.panicState = "panic_queued";
    } finally {
      app.flushing = false;
      render();
    }
    if (app.flushAgain) { app.flushAgain = false; flush(); return; }
    if (retry) app.flushTimer = setTimeout(flush, app.retryMs);
  }

  // --- warnings stream (server-sent events over fetch, so the token stays in a header) --------
  async function connectStream() {
    clearTimeout(app.streamTimer);
    if (!app.token || app.stream) return;
    if (navigator.onLine === false) { setConn("offline"); return; }
    const ctrl = new AbortController();
    app.stream = ctrl;
    let refused = false;
    try {
      const r = await fetch("api/stream", {
        headers: { authorization: "Bearer " + app.token, accept: "text/event-stream" },
        cache: "no-store", signal: ctrl.signal,
      });
      if (r.status === 401 || r.status === 403) {
        refused = true;
        onRefused(r.status);
      } else if (r.ok && r.body) {
        setConn("live");
        app.streamRetryMs = 0;
        flush();
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value.replace(/\r/g, "");
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            onEvent(buf.slice(0, i));
            buf = buf.slice(i + 2);
          }
        }
      }
    } catch (e) { /* network gone or aborted: reconnect below */ }
    if (app.stream !== ctrl) return; // replaced or stopped meanwhile
    app.stream = null;
    if (ctrl.signal.aborted) return;
    setConn(refused ? "unlinked" : navigator.onLine === false ? "offline" : "connecting");
    app.streamRetryMs = refused ? RETRY_MAX_MS : Math.min(RETRY_MAX_MS, Math.max(1000, app.streamRetryMs * 2));
    app.streamTimer = setTimeout(connectStream, app.streamRetryMs);
  }

  function stopStream() {
    if (app.stream) { const s = app.stream; app.stream = null; s.abort(); }
  }

  function onEvent(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const at = line.indexOf(":");
      const field = at < 0 ? line : line.slice(0, at);
      const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length) return;
    let doc;
    try { doc = JSON.parse(data.join("\n")); } catch (e) { return; }
    if (name === "state") applyState(doc);
    else if (name === "warning") applyWarning(doc, false);
    else if (name === "command") applyCommand(doc);
    render();
  }

  function onRefused(status) {
    if (status === 401 && !app.device) {
      unlink();
      setText("setup-msg", t("setup_bad"));
    }
  }

  // --- linking the phone ------------------------------------------------------------------
  async function link(token) {
    app.token = token;
    store.set(KEY.token, token);
    try {
      const r = await fetch("api/state", { headers: { authorization: "Bearer " + token }, cache: "no-store" });
      if (r.status === 401 || r.status === 403) {
        unlink();
        setText("setup-msg", t("setup_bad"));
        return;
      }
      if (!r.ok) throw new Error(String(r.status));
      applyState(await r.json());
      setText("setup-msg", "");
    } catch (e) {
      if (!app.device) { setText("setup-msg", t("setup_offline")); setTimeout(() => link(token), 5000); return; }
    }
    start();
  }

  function unlink() {
    stopStream();
    for (const k of [KEY.token, KEY.device, KEY.unsent, KEY.interval]) store.del(k);
    unsent = [];
    app.token = null;
    app.device = null;
    app.warnings = new Map();
    if (app.watchId !== null) navigator.geolocation.clearWatch(app.watchId);
    app.watchId = null;
    clearTimeout(app.pollTimer);
    render();
  }

  function start() {
    render();
    if (!app.token || !app.device) return;
    startPosition();
    connectStream();
    flush();
  }

  // --- panic: press and hold --------------------------------------------------------------
  function setupPanic() {
    const button = $("panic");
    let timer = null;
    const begin = (e) => {
      if (timer || (e.button !== undefined && e.button !== 0)) return;
      e.preventDefault();
      unlockAudio();
      button.classList.remove("fired");
      button.classList.add("holding");
      app.panicState = "panic_holding";
      render();
      timer = setTimeout(() => {
        timer = null;
        button.classList.remove("holding");
        button.classList.add("fired");
        setTimeout(() => button.classList.remove("fired"), 5000);
        firePanic();
      }, HOLD_MS);
    };
    const end = () => {
      if (!timer) return;
      clearTimeout(timer);
      timer = null;
      button.classList.remove("holding");
      app.panicState = "";
      render();
    };
    button.addEventListener("pointerdown", begin);
    for (const ev of ["pointerup", "pointerleave", "pointercancel"]) button.addEventListener(ev, end);
    button.addEventListener("keydown", (e) => { if ((e.key === " " || e.key === "Enter") && !e.repeat) begin(e); });
    button.addEventListener("keyup", (e) => { if (e.key === " " || e.key === "Enter") end(); });
    button.addEventListener("contextmenu", (e) => e.preventDefault()); // a long press is not a menu
  }

  function firePanic() {
    if (!app.device) return;
    const seq = nextSeq();
    app.panicSeq = seq;
    app.panicState = navigator.onLine === false ? "panic_queued" : "panic_sending";
    enqueue({ kind: "panic", body: { v: 1, device: app.device, seq: seq, t: new Date().toISOString(), type: "panic", detail: {} } });
    vibrate(200);
    if ("geolocation" in navigator) { // where she is now goes right after the alarm
      navigator.geolocation.getCurrentPosition(record, onPositionError, { enableHighAccuracy: true, maximumAge: 5000, timeout: 20000 });
    }
    flush();
  }

  // --- quick exit -------------------------------------------------------------------------
  function quickExit() {
    app.disguised = true;
    store.set(KEY.hidden, "1"); // stays hidden when reopened, until she holds the temperature
    stopAlerting();
    for (const id of ["level-text", "message", "advice", "near", "status", "panic-state", "pos-text", "unsent-text", "setup-msg"]) setText(id, "");
    $("token").value = "";
    app.settingsOpen = false;
    $("settings").hidden = true;
    $("app").hidden = true;
    document.body.dataset.level = "none";
    document.body.dataset.sounding = "";
    document.body.classList.add("disguised");
    const n = NEUTRAL[app.lang] || NEUTRAL.nl;
    setText("n-title", n.title);
    setText("n-temp", n.temp);
    setText("n-sky", n.today + ": " + n.sky);
    const days = $("n-days");
    days.replaceChildren();
    for (const [day, temp, sky] of n.days) {
      const li = document.createElement("li");
      for (const [cls, text] of [["d", day], ["tmp", temp], ["s", sky]]) {
        const span = document.createElement("span");
        span.className = cls;
        span.textContent = text;
        li.append(span);
      }
      days.append(li);
    }
    $("neutral").hidden = false;
    document.title = n.title;
    $("favicon").setAttribute("href", "icon-weather.svg");
    history.replaceState(null, "", location.pathname); // nothing in the address bar but the path
    if (document.activeElement) document.activeElement.blur();
    window.scrollTo(0, 0);
  }

  function setupReturn() {
    const temp = $("n-temp");
    let timer = null;
    temp.addEventListener("pointerdown", (e) => {
      e.preventDefault();
      timer = setTimeout(() => {
        timer = null;
        app.disguised = false;
        store.del(KEY.hidden);
        document.body.classList.remove("disguised");
        $("neutral").hidden = true;
        $("app").hidden = false;
        render();
      }, RETURN_HOLD_MS);
    });
    for (const ev of ["pointerup", "pointerleave", "pointercancel"]) {
      temp.addEventListener(ev, () => { clearTimeout(timer); timer = null; });
    }
    temp.addEventListener("contextmenu", (e) => e.preventDefault());
  }

  // --- wiring -----------------------------------------------------------------------------
  function init() {
    const hash = new URLSearchParams(location.hash.slice(1));
    const given = hash.get("token");
    if (given || location.hash) history.replaceState(null, "", location.pathname); // no token in history

    $("exit").addEventListener("click", quickExit);
    $("lang").addEventListener("click", () => {
      app.lang = app.lang === "nl" ? "en" : "nl";
      store.set(KEY.lang, app.lang);
      render();
    });
    $("settings-open").addEventListener("click", () => { app.settingsOpen = !app.settingsOpen; render(); });
    $("settings-close").addEventListener("click", () => { app.settingsOpen = false; render(); });
    $("discreet").addEventListener("change", (e) => {
      app.discreet = e.target.checked;
      store.set(KEY.discreet, app.discreet ? "1" : "0");
      render();
    });
    $("unlink").addEventListener("click", () => {
      if (window.confirm(t("unlink_confirm"))) { app.settingsOpen = false; unlink(); }
    });
    $("silence").addEventListener("click", () => { stopAlerting(); render(); });
    $("clear-ok").addEventListener("click", () => { app.cleared = null; render(); });
    $("setup-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const token = $("token").value.trim();
      $("token").value = "";
      if (token) link(token);
    });
    document.addEventListener("pointerdown", unlockAudio, { passive: true });
    document.addEventListener("keydown", unlockAudio);
    window.addEventListener("online", () => { setConn("connecting"); connectStream(); flush(); });
    window.addEventListener("offline", () => { stopStream(); setConn("offline"); });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") { connectStream(); flush(); }
    });
    setupPanic();
    setupReturn();

    if ("serviceWorker" in navigator) navigator.serviceWorker.register("sw.js").catch(() => {});

    if (store.get(KEY.hidden) === "1") quickExit();
    if (given) link(given);
    else if (app.token && !app.device) link(app.token);
    else start();
  }

  init();
})();
