// emguard victim app service worker: the app shell works offline and installed.
// It caches the shell only. API calls (api/...) are never intercepted or stored, so no
// warning or position is ever kept on the phone by the cache.
"use strict";

const CACHE = "emg-victim-shell-v1";
const SHELL = [
  "./", "app.js", "app.css", "text.js",
  "manifest.webmanifest", "manifest-plain.webmanifest",
  "icon-weather.svg", "icon-weather-192.png", "icon-weather-512.png",
  "icon-shield.svg", "icon-shield-192.png", "icon-shield-512.png",
];
const SCOPE = new URL("./", self.location).href;
const SHELL_URLS = new Set(SHELL.map((p) => new URL(p, SCOPE).href));

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET") return;
  const url = new URL(req.url);
  let key = url.origin + url.pathname; // no query, no fragment (a provisioning link's token)
  if (key === SCOPE + "index.html") key = SCOPE;
  if (!SHELL_URLS.has(key)) return; // the API and anything else: straight to the network, never cached
  // network first, so a new app version arrives at once; the cached shell when offline
  event.respondWith(
    fetch(req).then((res) => {
      if (res.ok) {
        const copy = res.clone();
        caches.open(CACHE).then((c) => c.put(key, copy));
      }
      return res;
    }).catch(() => caches.match(key).then((hit) => hit || Response.error())),
  );
});
