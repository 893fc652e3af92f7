"""The operator console's single page (HTML + CSS + JS inline: nothing is fetched from the network at run time).

The page long-polls `/state?after=<frame>&wait=1` (the server answers as soon as a newer frame is published),
then loads `/frame?seq=<n>`; `window.s2r.frames` keeps (seq, browser wall time) of each frame shown, which the
browser test and `bench/hil_console.py` read. Buttons POST `/press` one at a time per page (click order) with a
per-page id and a counter, so a retried request is applied once.
"""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:1em;background:#111;color:#eee}
main{display:flex;gap:1.5em;flex-wrap:wrap}
#camera{width:384px;image-rendering:pixelated;background:#333;min-height:200px}
button{font-size:1.1em;margin:.2em;padding:.5em 1em;border-radius:6px;border:0;cursor:pointer}
#b-success{background:#2a2}#b-failure{background:#c33}#b-reset{background:#888}
#b-intervene.on,#b-pause.on,#b-labelling.on{outline:3px solid #fc0}#b-label{background:#2a2;display:none}
.labelling #b-label{display:inline-block}#b-label.held{background:#5f5}
#stalled{color:#f44;font-weight:bold}table{border-collapse:collapse}td{padding:0 .6em}
svg{background:#222}.legend span{margin-right:1em}
</style></head>
<body><h2>__TITLE__</h2>
<main>
<section><img id="camera" alt="camera"><div>frame <span id="frame-seq">0</span>
 <span id="frame-age"></span> <span id="stalled"></span></div></section>
<section>
<div><button id="b-success" data-button="success">success (y)</button>
<button id="b-failure" data-button="failure">failure (n)</button>
<button id="b-reset" data-button="reset">reset (x)</button></div>
<div><button id="b-intervene" data-button="intervene">take over (space)</button>
<button id="b-pause" data-button="pause">pause (p)</button>
<button id="b-labelling" data-button="labelling">labelling mode (l)</button>
<button id="b-label">hold: success frame (s)</button></div>
<p>presses sent <span id="sent">0</span>, applied by the actor <span id="applied">0</span></p>
<table id="stats"></table>
<svg id="chart" width="420" height="160" viewBox="0 0 420 160"></svg>
<div class="legend"><span style="color:#4c4">&#9632; success rate</span>
<span style="color:#fc0">&#9632; intervention rate</span> (per episode)</div>
</section></main>
<script>
"use strict";
const s2r = window.s2r = {frames: [], shown: 0, sent: 0, client: Math.random().toString(36).slice(2), loaded: false};
const $ = (id) => document.getElementById(id);
s2r.chain = Promise.resolve();
function press(button) {  // one request at a time per page, so this page's presses arrive in click order
  s2r.sent += 1; $("sent").textContent = s2r.sent;
  const id = s2r.client + "-" + s2r.sent;
  s2r.chain = s2r.chain.then(() => send(button, id));
  return s2r.chain;
}
async function send(button, id) {
  for (let attempt = 0; attempt < 3; attempt++) {  // same id on retry: the server applies it once
    try {
      const r = await fetch("/press", {method: "POST", headers: {"Content-Type": "application/json", "X-S2R-Console": "1"},
                                       body: JSON.stringify({button: button, id: id})});
      if (r.ok) return;
    } catch (e) { await new Promise((res) => setTimeout(res, 200)); }
  }
}
document.querySelectorAll("button[data-button]").forEach((b) => b.addEventListener("click", () => press(b.dataset.button)));
const hold = $("b-label");
hold.addEventListener("pointerdown", () => { hold.classList.add("held"); press("label_down"); });
for (const ev of ["pointerup", "pointerleave"])
  hold.addEventListener(ev, () => { if (hold.classList.contains("held")) { hold.classList.remove("held"); press("label_up"); } });
const keys = {y: "success", n: "failure", x: "reset", " ": "intervene", p: "pause", l: "labelling"};
let sHeld = false;
document.addEventListener("keydown", (e) => {
  if (e.repeat) return;
  if (e.key === "s" && document.body.classList.contains("labelling")) { sHeld = true; press("label_down"); }
  else if (keys[e.key]) { e.preventDefault(); press(keys[e.key]); }
});
document.addEventListener("keyup", (e) => { if (e.key === "s" && sHeld) { sHeld = false; press("label_up"); } });
function loadFrame(seq) {
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => {
      img.id = "camera"; img.alt = "camera"; $("camera").replaceWith(img);  // no second fetch (no-store)
      s2r.shown = seq; $("frame-seq").textContent = seq;
      s2r.frames.push([seq, performance.timeOrigin + performance.now()]);
      if (s2r.frames.length > 5000) s2r.frames.splice(0, 1000);
      resolve();
    };
    img.onerror = () => resolve();
    img.src = "/frame?seq=" + seq;
  });
}
function chart(history) {
  const svg = $("chart"), W = 420, H = 160, pad = 20;
  if (!history.length) { svg.innerHTML = ""; return; }
  const e0 = history[0].episode, e1 = Math.max(history[history.length - 1].episode, e0 + 1);
  const line = (key, color) => {
    const pts = history.filter((p) => typeof p[key] === "number").map((p) =>
      ((pad + (W - 2 * pad) * (p.episode - e0) / (e1 - e0)).toFixed(1) + "," + (H - pad - (H - 2 * pad) * p[key]).toFixed(1)));
    return `<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.join(" ")}"/>`;
  };
  svg.innerHTML = `<line x1="${pad}" y1="${H - pad}" x2="${W - pad}" y2="${H - pad}" stroke="#666"/>` +
    `<line x1="${pad}" y1="${pad}" x2="${pad}" y2="${H - pad}" stroke="#666"/>` +
    `<text x="${pad}" y="${H - 4}" fill="#aaa" font-size="10">episode ${e0}</text>` +
    `<text x="${W - pad - 60}" y="${H - 4}" fill="#aaa" font-size="10">episode ${e1}</text>` +
    `<text x="2" y="${pad + 4}" fill="#aaa" font-size="10">1</text>` +
    line("success_rate", "#4c4") + line("intervention_rate", "#fc0");
}
function show(st) {
  $("applied").textContent = st.events_applied;
  $("b-intervene").classList.toggle("on", st.intervene);
  $("b-pause").classList.toggle("on", st.paused);
  $("b-labelling").classList.toggle("on", st.labelling);
  document.body.classList.toggle("labelling", st.labelling);
  $("frame-age").textContent = st.frame_age_s === null ? "" : "(" + (1000 * st.frame_age_s).toFixed(0) + " ms old)";
  $("stalled").textContent = st.camera_stalled ? (st.frame_seq ? "camera stopped" : "no camera frame yet") : "";
  $("stats").innerHTML = Object.entries(st.stats).map(([k, v]) =>
    `<tr><td>${k}</td><td>${typeof v === "number" && !Number.isInteger(v) ? v.toFixed(3) : v}</td></tr>`).join("");
  chart(st.history);
}
async function loop() {
  while (true) {
    try {
      const r = await fetch("/state?after=" + s2r.shown + "&wait=1");
      const st = await r.json();
      show(st);
      if (st.frame_seq > s2r.shown) await loadFrame(st.frame_seq);
    } catch (e) { await new Promise((res) => setTimeout(res, 500)); }
  }
}
window.addEventListener("load", () => { s2r.loaded = true; });
loop();
</script></body></html>
"""
