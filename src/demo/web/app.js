// hom-demo-api's web UI: reads the device's JSON API with fetch() and renders it. Every URL
// is absolute ("/status"), resolved against the page's own origin.
"use strict";

function show(id, text) {
  document.getElementById(id).textContent = text;
}

function showError(message) {
  const error = document.getElementById("error");
  error.textContent = message;
  error.hidden = false;
}

// GET `path` as JSON; returns [document, milliseconds].
async function getJson(path) {
  const started = performance.now();
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`GET ${path}: HTTP ${response.status}`);
  const doc = await response.json();
  return [doc, Math.round(performance.now() - started)];
}

async function refresh() {
  document.getElementById("error").hidden = true;
  try {
    const [[gps, gpsMs], [status, statusMs]] = await Promise.all([
      getJson("/gps/latitude"),
      getJson("/status"),
    ]);
    show("latitude", String(gps.latitude));
    show("gps-ms", `${gpsMs} ms`);
    show("service", status.service);
    show("status", status.status);
    show("uptime", `${status.uptime_s} s`);
    show("requests", String(status.requests_served));
    show("status-ms", `${statusMs} ms`);
  } catch (e) {
    showError(String(e.message || e));
  }
}

async function createDessert(event) {
  event.preventDefault();
  const name = document.getElementById("dessert-name").value.trim();
  try {
    const response = await fetch("/food/dessert", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name }),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`POST /food/dessert: HTTP ${response.status}: ${text}`);
    show("dessert-result", text);
  } catch (e) {
    showError(String(e.message || e));
  }
}

document.getElementById("origin").textContent = window.location.host;
document.getElementById("refresh").addEventListener("click", refresh);
document.getElementById("dessert-form").addEventListener("submit", createDessert);
refresh();
