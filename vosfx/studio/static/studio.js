// vosfx studio page: plain JS, no build step. Talks to the server in vosfx/studio/server.py:
// JSON POSTs to /api/*, images from /api/view/N, events from /api/events (server-sent).
"use strict";

const TOKEN = document.querySelector('meta[name="vosfx-token"]').content;
const $ = (id) => document.getElementById(id);

const S = {
  clip: null, frame: 0, view: "overlay", obj: null, objects: [], prompts: [],
  timeline: null, version: 0, playing: false, busy: null, trackDone: 0, trackTotal: 0,
  zoom: 1, panX: 0, panY: 0, img: null, imgFrame: -1, drag: null, pendingDraw: false,
  quick: null,  // a prompt's answer drawn at once: {frame, version, src, layers}
  ended: 0,  // how many tracks and renders have ended (their events), for the Render button
  solo: false,  // the selected object alone in the views
  paint: null,  // Paint under way: {frame, obj, canvas, ctx}
  progress: null,  // the running track's or render's start, for its rate: {what, t0, done0}
  recovered: null, savedJob: null,  // the earlier work offered (Restore, Open)
  unsaved: false,  // changes since the job was last saved
};
// after a prompt the overlay is drawn at once from the masks it returned; the finished view
// (guided refine, finishing) is asked for once the clicks pause this long
const EXACT_DELAY_MS = 120;
// what tests and the benchmark read: the last frame drawn and the last prompt's answer
window.vosfx = { state: S, drawn: 0, last: null, events: [] };

async function api(path, body) {
  const opts = { headers: { "X-Vosfx-Token": TOKEN } };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  return answer(path, opts);
}

// what the studio answered, or an Error that says what happened in words: the server gone
// (closed, stopped) or another run's on this port (403: this page's token is an earlier run's)
const GONE = "the studio is not running any more (closed or stopped): start `vosfx studio` " +
  "again and open the address it prints";
const OLD_RUN = "this page belongs to an earlier run of the studio (each run has its own " +
  "address): open the address `vosfx studio` printed";
async function answer(path, opts) {
  // the user's next action (every action is a POST) takes down the banner of an earlier
  // failure, as it is sent: a failure of the work it starts (an event) may come before its
  // answer; reads in the background (GET) leave it up
  if (opts.method === "POST") clearProblem();
  let res;
  try { res = await fetch(path, opts); } catch (err) { throw new Error(GONE); }
  if (res.status === 403) throw new Error(OLD_RUN);
  const text = await res.text();
  let data = null;
  try { data = JSON.parse(text); } catch (err) { /* not JSON: said below */ }
  if (!res.ok || data === null) {
    throw new Error((data && data.error) || `${res.status} ${res.statusText}: ${text.slice(0, 200)}`);
  }
  return data;
}

function status(text) { const s = $("status"); s.textContent = text; delete s.dataset.error; }
function problem(text) { const p = $("problem"); p.hidden = !text; p.textContent = text || ""; }
function fail(err) {
  status("error: " + err.message);
  $("status").dataset.error = "1";
  problem(err.message);
}
// the banner and an "error: ..." status go together: the next action takes down both (the
// status kept saying "error" after the banner had gone)
function clearProblem() {
  problem("");
  if ($("status").dataset.error) status("");
}

// A render runs on the studio's one worker: an edit (a click, a box, a dropped mask, Clear
// frame, Undo/Redo, deleting an object, Track, another Render) stops it first, and a stopped
// render keeps nothing. So while one runs the page asks before such an action.
function mayStopRender(what) {
  if (S.busy !== "render") return true;
  const yes = confirm(`A render is running. ${what} stops it, and a stopped render ` +
    "keeps nothing of what it wrote. Stop the render?");
  if (!yes) status("the render goes on");
  return yes;
}

// --- start ------------------------------------------------------------------------------
async function boot() {
  let st;
  for (;;) {
    st = await api("/api/state");
    if (st.ready) break;
    if (st.error) {
      status("the studio cannot start");
      problem(st.error.message);
      document.body.dataset.error = st.error.kind;
      return;
    }
    const d = st.download;  // a first run's model download
    const mib = (n) => (n / 1048576).toFixed(1);
    status(d ? `${d.message}: ${mib(d.done)}${d.total ? " / " + mib(d.total) : ""} MiB`
      : "loading the model...");
    await new Promise((r) => setTimeout(r, 150));
  }
  S.clip = st;
  problem("");
  // how the model runs (a GPU asked for and absent, a tier in a slower form): said while
  // the page is open, as the terminal and each render's result say it
  const notice = $("notice");
  notice.hidden = !st.warnings.length;
  notice.textContent = st.warnings.map((w) => `warning: ${w}`).join("\n");
  $("clip-name").textContent = `${st.name}  ${st.width}x${st.height}, ${st.num_frames} frames`;
  S.frame = st.frame !== null && st.frame !== undefined ? st.frame : st.start;
  applyState(st);
  fillRenderPanel(st);
  $("done").hidden = !st.done_mode;
  connectEvents();
  await refreshTimeline();
  fit();
  showFrame(S.frame);
  status("ready: click on the object");
  document.body.dataset.ready = "1";
}

function applyState(st) {
  S.objects = st.objects;
  S.prompts = st.prompts;
  S.busy = st.busy;
  if (!S.objects.some((o) => o.obj_id === S.obj)) S.obj = S.objects.length ? S.objects[0].obj_id : null;
  $("undo").disabled = !st.can_undo;
  $("redo").disabled = !st.can_redo;
  showUnsaved(st.unsaved);
  $("stop").disabled = !st.busy;
  S.refine = st.refine;
  for (const el of document.querySelectorAll("#finishing [data-key]")) {
    const v = st.refine[el.dataset.key];
    el.value = v;
    if (el.nextElementSibling && el.nextElementSibling.tagName === "OUTPUT") {
      el.nextElementSibling.textContent = v;
    }
  }
  renderObjects();
  updateClear();
  showRecovery(st.recovered, st.saved_job);
}

async function reloadState() { applyState(await api("/api/state")); }

// changes since the job was last saved (they are kept on disk either way): a dot in the tab's
// title and on Save job, as editors mark an unsaved document; Ctrl+S saves
function showUnsaved(unsaved) {
  S.unsaved = Boolean(unsaved);
  document.title = (S.unsaved ? "● " : "") + "vosfx studio" + (S.clip ? ` — ${S.clip.name}` : "");
  $("save-job").classList.toggle("unsaved", S.unsaved);
}

// Offered while this studio has no prompt: a session of this clip kept by a studio that
// ended unsaved (a closed page, Ctrl-C, a crash: Restore puts its prompts and finishing
// back, Discard removes it), and the job saved beside the clip (Open)
function showRecovery(kept, saved) {
  S.recovered = kept || null;
  S.savedJob = saved || null;
  $("recovery").hidden = !kept && !saved;
  $("kept-offer").hidden = !kept;
  $("saved-offer").hidden = !saved;
  const count = (o) => `${o.prompts} prompt${o.prompts === 1 ? "" : "s"} on ` +
    (o.objects === 1 ? "1 object" : `${o.objects} objects`);
  if (kept) {
    $("recovery-text").textContent = `A session of this clip ended on ${kept.saved_at} ` +
      `without being saved: ${count(kept)}.`;
  }
  if (saved) {
    $("saved-text").textContent = `The job saved beside this clip, ` +
      `${saved.path.split(/[/\\]/).pop()} (${saved.saved_at}): ${count(saved)}.`;
  }
}
async function recover(op) {
  const offer = op === "open" ? S.savedJob : S.recovered;
  if (!offer) return;
  clearProblem();
  try {
    const st = await api("/api/recover", { op, path: offer.path });
    applyState(st);
    if (op === "discard") return;
    if (op === "open") fillRenderPanel(st);  // the job's output, Save job writes it in place
    status(op === "open" ? "the saved job is open" : "the kept session is back: Track to " +
      "propagate it");
    await refreshTimeline();
    showFrame(S.frame, true);
  } catch (err) { fail(err); }
}
$("restore").onclick = () => recover("restore");
$("discard").onclick = () => recover("discard");
$("open-saved").onclick = () => recover("open");

function fillRenderPanel(st) {
  for (const id of ["format", "extra-formats"]) {
    const sel = $(id);
    sel.innerHTML = "";
    for (const f of st.formats) sel.add(new Option(f, f, false, id === "format" && f === st.format));
  }
  const presets = $("preset");
  presets.innerHTML = "";
  presets.add(new Option("(none)", ""));
  for (const name of Object.keys(st.output_presets)) presets.add(new Option(name, name));
  presets.onchange = () => {
    const out = st.output_presets[presets.value];
    if (out && out.format) { $("format").value = out.format; $("format").onchange(); }
  };
  // a reopened job's own output, else `vosfx matte`'s default for the format
  $("output").value = st.output;
  $("job-path").value = st.job_path;  // a reopened job's own file, else beside the clip
  $("range-start").value = st.start;
  $("range-end").value = st.end - 1;  // shown inclusive, like the frame counter
  $("each-object").checked = st.each_object;
  $("alpha-mode").value = st.alpha_mode;
  let shown = st.format;  // the format the output path was made for
  $("format").onchange = () => {
    const f = $("format").value;
    const current = $("output").value.trim();
    if (!current || current === st.default_outputs[shown]) {
      // not the user's own path: the default follows the format (`vosfx matte`'s naming)
      $("output").value = st.default_outputs[f];
      shown = f;
      return;
    }
    shown = f;
    // only what an earlier format added goes (a sequence's `_<format>` folder suffix or a
    // movie's extension): a path the user typed keeps its name
    // st.format_ext: format id -> its movie's extension, "" for an image sequence (a folder)
    const suffixes = st.formats.map((id) => "_" + id)
      .concat(Object.values(st.format_ext).filter(Boolean));
    let out = current.replace(/[/\\]+$/, "");
    for (const s of suffixes) {
      if (out.toLowerCase().endsWith(s)) { out = out.slice(0, -s.length); break; }
    }
    const ext = st.format_ext[f];
    $("output").value = ext ? out + ext : `${out}_${f}`;
  };
}

// --- objects ----------------------------------------------------------------------------
function renderObjects() {
  const ul = $("objects");
  ul.innerHTML = "";
  for (const o of S.objects) {
    const li = document.createElement("li");
    li.dataset.obj = o.obj_id;
    li.className = o.obj_id === S.obj ? "selected" : "";
    li.innerHTML = `<span class="swatch"></span><span class="name"></span>` +
      `<button class="rename" title="Rename">✎</button><button class="delete" title="Delete">✕</button>`;
    li.querySelector(".swatch").style.background = o.colour;
    li.querySelector(".name").textContent = o.name;
    li.onclick = (e) => {
      if (e.target.closest("button")) return;
      selectObject(S.objects.indexOf(o));
    };
    li.querySelector(".rename").onclick = async () => {
      const name = prompt("Name of object " + o.obj_id, o.name);
      if (name) await act(() => api("/api/objects", { op: "rename", obj_id: o.obj_id, name }));
    };
    li.querySelector(".delete").onclick = async () => {
      if (mayStopRender("Deleting an object") && confirm(`Delete ${o.name} and its prompts?`)) {
        await act(() => api("/api/objects", { op: "delete", obj_id: o.obj_id }), true);
      }
    };
    ul.appendChild(li);
  }
}

// [ and ]: the selected object's previous / next prompted frame (where a correction goes)
function jumpToPrompt(dir) {
  const frames = S.prompts.filter((p) => p.obj_id === S.obj).map((p) => p.frame);
  jumpTo(frames, dir, "has no prompt");
}
// { and }: the previous / next frame where the selected object was lost or found again by
// tracking (where a correction is most often needed)
function jumpToChange(dir) {
  const o = S.timeline && S.timeline.objects.find((q) => q.obj_id === S.obj);
  const runs = o ? o.presence : [];
  // a run's first frame, where the one before it differs (absent after present, or back)
  const starts = runs.filter((r, i) => i > 0 && runs[i - 1][1] + 1 === r[0] && runs[i - 1][2] !== r[2])
    .map((r) => r[0]);
  jumpTo(starts, dir, "is not lost or found");
}
// the nearest of ``frames`` after (dir > 0) or before the frame shown, else the status says
// "<object> <none> after/before frame N"
function jumpTo(frames, dir, none) {
  const to = dir > 0 ? Math.min(...frames.filter((f) => f > S.frame))
    : Math.max(...frames.filter((f) => f < S.frame));
  const name = (S.objects.find((o) => o.obj_id === S.obj) || {}).name || "this object";
  if (Number.isFinite(to)) showFrame(to);
  else status(`${name} ${none} ${dir > 0 ? "after" : "before"} frame ${S.frame}`);
}
// 1-9: the object at that place in the list
function selectObject(i) {
  if (i < 0 || i >= S.objects.length) return;
  const changed = S.obj !== S.objects[i].obj_id;
  S.obj = S.objects[i].obj_id;
  renderObjects();
  if (changed && S.solo) showFrame(S.frame, true);  // the view shows the selected one only
  else draw();
}

async function act(fn, redraw) {
  try {
    const out = await fn();
    await reloadState();
    await refreshTimeline();
    if (redraw) showFrame(S.frame, true);
    return out;
  } catch (err) { fail(err); return null; }
}

// --- viewer -----------------------------------------------------------------------------
const canvas = $("canvas");
const ctx = canvas.getContext("2d");

function viewWidth() { return S.clip.width * (S.view === "side" ? 2 : 1); }

function fit() {
  const r = canvas.getBoundingClientRect();
  canvas.width = Math.max(1, Math.round(r.width));
  canvas.height = Math.max(1, Math.round(r.height));
  S.zoom = Math.min(canvas.width / viewWidth(), canvas.height / S.clip.height);
  S.panX = (canvas.width - viewWidth() * S.zoom) / 2;
  S.panY = (canvas.height - S.clip.height * S.zoom) / 2;
  draw();
}

function toImage(ev) {
  const r = canvas.getBoundingClientRect();
  return [(ev.clientX - r.left - S.panX) / S.zoom, (ev.clientY - r.top - S.panY) / S.zoom];
}

let loadSeq = 0;
function showFrame(t, force) {
  if (!S.clip) return;
  t = Math.max(S.clip.start, Math.min(S.clip.end - 1, t));
  const changed = t !== S.frame;
  S.frame = t;
  updateLabel();
  drawTimeline();
  if (!changed && !force && S.imgFrame === t && S.imgVersion === S.version) return;
  const seq = ++loadSeq;
  const img = new Image();
  const version = S.version;
  const soloObj = S.solo && S.obj !== null ? S.obj : null;
  img.onload = () => {
    if (seq !== loadSeq) return; // a newer frame was asked for
    S.img = img;
    S.imgFrame = t;
    S.imgVersion = version;
    draw();
    window.vosfx.drawn += 1;
    canvas.dataset.frame = t;
    canvas.dataset.view = S.view;
    canvas.dataset.solo = soloObj === null ? "" : soloObj;  // the object shown alone, if any
    canvas.dataset.version = version;
    const last = window.vosfx.last;
    if (last && last.version !== undefined && last.exactMs === undefined && last.frame === t &&
        version >= last.version) {
      last.exactMs = performance.now() - last.t0;  // the finished view of that prompt
      if (last.drawnMs === undefined) last.drawnMs = last.exactMs;
    }
    if (S.playing) setTimeout(playStep, 0);
    else if (S.view === "overlay") {  // the base of a click's overlay, ready before the click
      setTimeout(() => { if (S.frame === t && !S.playing) sourceImage(t).catch(() => {}); }, 150);
    }
  };
  img.onerror = () => { if (seq === loadSeq) status("could not load frame " + t); };
  const solo = soloObj === null ? "" : `&obj=${soloObj}`;
  img.src = `/api/view/${t}?view=${S.view}${solo}&v=${version}&token=${TOKEN}`;
}

// Clear frame: only for the selected object's prompt on this frame (with no object it sent
// `obj_id: null`, answered by a parse error)
function updateClear() {
  $("clear-frame").disabled = S.obj === null ||
    !S.prompts.some((p) => p.obj_id === S.obj && p.frame === S.frame);
}

function draw() {
  if (!S.clip) return;
  updateClear();
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.setTransform(S.zoom, 0, 0, S.zoom, S.panX, S.panY);
  if (S.view === "cutout") checkerboard();
  const q = S.quick;
  if (q && q.frame === S.frame && q.version === S.version && S.view === "overlay" &&
      !(S.img && S.imgFrame === S.frame && S.imgVersion >= q.version)) {
    // the prompt's masks over the source frame, until the finished view arrives
    ctx.drawImage(q.src, 0, 0);
    for (const layer of q.layers) ctx.drawImage(layer, 0, 0, S.clip.width, S.clip.height);
  } else if (S.img) ctx.drawImage(S.img, 0, 0);
  if (S.paint && S.paint.frame === S.frame) {  // the mask being painted, over the view
    ctx.globalAlpha = 0.55;
    ctx.drawImage(S.paint.canvas, 0, 0);
    ctx.globalAlpha = 1;
  }
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  for (const p of S.prompts.filter((q) => q.frame === S.frame && (!S.solo || q.obj_id === S.obj))) {
    drawPrompt(p);  // (shown alone, an object's points alone)
  }
  if (S.drag && S.drag.box) {
    const [x0, y0, x1, y1] = S.drag.box;
    ctx.strokeStyle = "#fff";
    ctx.setLineDash([5, 4]);
    ctx.strokeRect(sx(x0), sy(y0), sx(x1) - sx(x0), sy(y1) - sy(y0));
    ctx.setLineDash([]);
  }
}
const sx = (x) => x * S.zoom + S.panX;
const sy = (y) => y * S.zoom + S.panY;

function checkerboard() {
  const n = 16;
  for (let y = 0; y < S.clip.height; y += n) {
    for (let x = 0; x < S.clip.width; x += n) {
      ctx.fillStyle = ((x + y) / n) % 2 ? "#999" : "#ccc";
      ctx.fillRect(x, y, n, n);
    }
  }
}

function drawPrompt(p) {
  const o = S.objects.find((q) => q.obj_id === p.obj_id);
  const colour = o ? o.colour : "#fff";
  ctx.lineWidth = p.obj_id === S.obj ? 2.5 : 1.5;
  if (p.box) {
    ctx.strokeStyle = colour;
    const [x0, y0, x1, y1] = p.box;
    ctx.strokeRect(sx(x0), sy(y0), sx(x1) - sx(x0), sy(y1) - sy(y0));
  }
  (p.points || []).forEach(([x, y], i) => {
    ctx.beginPath();
    ctx.arc(sx(x), sy(y), 6, 0, 2 * Math.PI);
    ctx.fillStyle = p.labels[i] ? "#3c3" : "#e33";
    ctx.fill();
    ctx.strokeStyle = colour;
    ctx.stroke();
  });
}

canvas.addEventListener("contextmenu", (e) => e.preventDefault());
canvas.addEventListener("mousedown", (e) => {
  if (!S.clip) return;
  if (e.button === 1 || (e.button === 0 && e.shiftKey)) {
    S.drag = { pan: true, x: e.clientX, y: e.clientY, px: S.panX, py: S.panY };
    return;
  }
  const [x, y] = toImage(e);
  const erase = e.button === 2 || e.altKey;
  if (S.paint && S.paint.frame === S.frame) {  // a brush stroke, not a prompt
    S.drag = { paint: true, erase, last: [x, y] };
    paintAt(x, y, erase);
    return;
  }
  S.drag = { x0: x, y0: y, cx: e.clientX, cy: e.clientY, exclude: erase };
});
window.addEventListener("mousemove", (e) => {
  const d = S.drag;
  if (!d) return;
  if (d.pan) {
    S.panX = d.px + e.clientX - d.x;
    S.panY = d.py + e.clientY - d.y;
    draw();
  } else if (d.paint) {
    const [x, y] = toImage(e);
    paintAt(x, y, d.erase, d.last);
    d.last = [x, y];
  } else if (Math.hypot(e.clientX - d.cx, e.clientY - d.cy) > 5 && !d.exclude) {
    const [x, y] = toImage(e);
    d.box = [d.x0, d.y0, x, y];
    draw();
  }
});
window.addEventListener("mouseup", async (e) => {
  const d = S.drag;
  S.drag = null;
  if (!d || d.pan || d.paint) return;
  if (S.obj === null) { status("add an object first"); return; }
  const clamp = (v, hi) => Math.max(0, Math.min(hi - 1, v));
  let body;
  if (d.box) {
    const [x0, y0, x1, y1] = d.box;
    body = { obj_id: S.obj, frame: S.frame, box: [clamp(Math.min(x0, x1), S.clip.width),
      clamp(Math.min(y0, y1), S.clip.height), clamp(Math.max(x0, x1), S.clip.width),
      clamp(Math.max(y0, y1), S.clip.height)] };
  } else {
    if (d.x0 < 0 || d.y0 < 0 || d.x0 >= S.clip.width || d.y0 >= S.clip.height) { draw(); return; }
    // the second press of a double-click (it fits the view) adds no point; the first press
    // went at once, as every click does, and the dblclick below takes it back
    if (e.detail >= 2) { draw(); return; }
    body = { obj_id: S.obj, frame: S.frame, x: d.x0, y: d.y0, label: d.exclude ? 0 : 1 };
  }
  if (!mayStopRender(d.box ? "A box" : "A click")) { draw(); return; }
  const sent = prompted(() => api("/api/click", body));
  S.lastClick = d.box ? null : { body, at: e.timeStamp, sent };
  await sent;
});

// The source picture of a frame (the base a prompt's overlay is drawn on), a few kept.
const sources = new Map();
function sourceImage(t) {
  let p = sources.get(t);
  if (!p) {
    p = new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => { sources.delete(t); reject(new Error("could not load frame " + t)); };
      img.src = `/api/view/${t}?view=source&token=${TOKEN}`;
    });
    sources.set(t, p);
    if (sources.size > 8) sources.delete(sources.keys().next().value);
  }
  return p;
}

function decodeLayer(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return createImageBitmap(new Blob([bytes], { type: "image/png" }));
}

let exactTimer = null;
async function prompted(call) {
  const t0 = performance.now();
  clearTimeout(exactTimer);
  // window.vosfx.quickOverlay = false: wait for the finished view instead (benchmarks compare)
  const quick = S.view === "overlay" && window.vosfx.quickOverlay !== false;
  const src = quick ? sourceImage(S.frame) : null;  // loads while the server decodes
  if (src) src.catch(() => {});
  try {
    const res = await call();
    const last = window.vosfx.last = Object.assign(res, { clientMs: performance.now() - t0, t0 });
    S.version += 1;
    const version = last.version = S.version;
    S.prompts = res.prompts;
    if (res.prompts.length) showRecovery(null, null);  // offered only while there is no prompt
    showUnsaved(res.unsaved);
    $("undo").disabled = !res.can_undo;
    $("redo").disabled = !res.can_redo;
    if (quick && S.view === "overlay" && res.frame === S.frame) {
      // the engine's masks for this prompt, drawn over the frame now
      let delay = EXACT_DELAY_MS;
      try {  // (drawnMs stays unset on failure: the finished view sets it)
        const [img, layers] = await Promise.all(
          [src, Promise.all(res.objects.filter((o) => o.mask && (!S.solo || o.obj_id === S.obj))
            .map((o) => decodeLayer(o.mask)))]);
        if (S.version === version && S.frame === res.frame) {  // nothing newer meanwhile
          S.quick = { frame: res.frame, version, src: img, layers };
          draw();
          canvas.dataset.quick = version;
        }
        last.drawnMs = performance.now() - t0;
      } catch (err) { delay = 0; }  // no source picture: the finished view at once
      exactTimer = setTimeout(() => { if (S.frame === res.frame) showFrame(res.frame, true); },
        delay);
    } else {
      const drawn = window.vosfx.drawn;
      showFrame(res.frame, true);
      draw();
      await waitDrawn(drawn);
      last.drawnMs = performance.now() - t0;
    }
    status(`mask in ${Math.round(performance.now() - t0)} ms (model ${res.ms} ms)`);
    refreshTimeline();
    return res;
  } catch (err) { fail(err); return null; }
}

function waitDrawn(n) {
  return new Promise((resolve) => {
    const check = () => (window.vosfx.drawn > n ? resolve() : setTimeout(check, 5));
    check();
  });
}

canvas.addEventListener("wheel", (e) => {
  e.preventDefault();
  const r = canvas.getBoundingClientRect();
  const mx = e.clientX - r.left, my = e.clientY - r.top;
  const k = Math.exp(-e.deltaY * 0.0015);
  S.panX = mx - (mx - S.panX) * k;
  S.panY = my - (my - S.panY) * k;
  S.zoom *= k;
  draw();
}, { passive: false });
// Double-click fits. A click is sent the moment the button comes up (0.04-0.12 s to its
// mask), not held back for the double-click time (~0.5 s) that would tell the two apart, so
// the first press of a double-click was sent as a point: it is taken back here, on the
// server only if it is still the last change (as if it never came: no redo step).
canvas.addEventListener("dblclick", async (e) => {
  fit();
  const c = S.lastClick;
  S.lastClick = null;
  try {
    if (!c || e.timeStamp - c.at > 1000) return;
    if (!(await c.sent)) return;  // refused or failed: nothing was added
    const b = c.body;
    const res = await act(() => api("/api/history",
      { op: "retract", obj_id: b.obj_id, frame: b.frame, x: b.x, y: b.y, label: b.label }));
    if (res && res.frame !== null) {
      S.version += 1;
      showFrame(res.frame, true);
      status("fitted to the window");
    }
  } finally {  // (what tests wait for)
    document.body.dataset.fitted = String(Number(document.body.dataset.fitted || 0) + 1);
  }
});
$("zoom-fit").onclick = fit;
window.addEventListener("resize", () => S.clip && fit());

const viewer = $("viewer");
viewer.addEventListener("dragover", (e) => { e.preventDefault(); viewer.classList.add("drop"); });
viewer.addEventListener("dragleave", () => viewer.classList.remove("drop"));
viewer.addEventListener("drop", async (e) => {
  e.preventDefault();
  viewer.classList.remove("drop");
  const file = e.dataTransfer.files[0];
  if (!file || S.obj === null) return;
  await dropMask(file);
});
async function dropMask(blob) {
  if (!mayStopRender("A mask")) return;
  // the file's name, for the message when it is not an image
  const name = blob.name ? `&name=${encodeURIComponent(blob.name)}` : "";
  await prompted(() => answer(`/api/mask?obj_id=${S.obj}&frame=${S.frame}${name}`,
    { method: "POST", headers: { "X-Vosfx-Token": TOKEN }, body: blob }));
}
window.vosfx.dropMask = dropMask;

// --- Paint: the selected object's mask on this frame, by hand ----------------------------
// It starts from the mask the engine gave (no finishing), white where painted on a clear
// canvas at the clip's size; drag adds, Alt- or right-drag erases; Apply sends it as a dropped
// mask (the frame's mask prompt, which conditions tracking as any mask prompt does).
async function startPaint() {
  if (S.obj === null) { status("add an object first"); return; }
  clearProblem();
  try {
    const img = await new Promise((ok, bad) => {
      const i = new Image();
      i.onload = () => ok(i);
      i.onerror = () => bad(new Error("could not load the object's mask on this frame"));
      i.src = `/api/objmask/${S.frame}?obj=${S.obj}&token=${TOKEN}`;
    });
    const c = document.createElement("canvas");
    c.width = S.clip.width;
    c.height = S.clip.height;
    const g = c.getContext("2d");
    g.drawImage(img, 0, 0);
    const px = g.getImageData(0, 0, c.width, c.height);
    for (let i = 0; i < px.data.length; i += 4) {
      px.data[i + 3] = px.data[i] >= 128 ? 255 : 0;
      px.data[i] = px.data[i + 1] = px.data[i + 2] = 255;
    }
    g.putImageData(px, 0, 0);
    S.paint = { frame: S.frame, obj: S.obj, canvas: c, ctx: g };
    $("paint-bar").hidden = false;
    $("paint").disabled = true;
    status("paint: drag adds, Alt- or right-drag erases; Apply makes it this frame's mask");
    draw();
  } catch (err) { fail(err); }
}
function paintAt(x, y, erase, from) {
  const g = S.paint.ctx, r = Number($("brush").value);
  g.globalCompositeOperation = erase ? "destination-out" : "source-over";
  g.strokeStyle = g.fillStyle = "#fff";
  g.beginPath();  // a dot where the pointer is (a zero-length stroke draws nothing)
  g.arc(x, y, r, 0, 2 * Math.PI);
  g.fill();
  if (from) {  // and the segment from where it was
    g.lineWidth = 2 * r;
    g.lineCap = "round";
    g.beginPath();
    g.moveTo(...from);
    g.lineTo(x, y);
    g.stroke();
  }
  g.globalCompositeOperation = "source-over";
  draw();
}
function endPaint() {
  S.paint = null;
  $("paint-bar").hidden = true;
  $("paint").disabled = false;
  draw();
}
async function applyPaint() {
  const p = S.paint;
  if (!p) return;
  const blob = await new Promise((ok) => p.canvas.toBlob(ok, "image/png"));
  endPaint();
  if (S.frame !== p.frame || S.obj !== p.obj) {
    status("the paint was for another frame or object: not applied");
    return;
  }
  await dropMask(blob);
}
$("paint").onclick = startPaint;
$("paint-apply").onclick = applyPaint;
$("paint-cancel").onclick = endPaint;

// --- timeline ---------------------------------------------------------------------------
const tl = $("timeline");
const tctx = tl.getContext("2d");

async function refreshTimeline() {
  try { S.timeline = await api("/api/timeline"); } catch (err) { return; }
  drawTimeline();
}

function tx(t) { return ((t - S.clip.start) + 0.5) / (S.clip.end - S.clip.start) * tl.width; }

function drawTimeline() {
  if (!S.clip) return;
  tl.width = tl.clientWidth || 600;
  const n = S.clip.end - S.clip.start;
  const w = Math.max(1, tl.width / n);
  tctx.fillStyle = "#18191c";
  tctx.fillRect(0, 0, tl.width, tl.height);
  // ruler: frame numbers
  tctx.fillStyle = "#778";
  tctx.font = "10px system-ui";
  const step = Math.max(1, Math.pow(10, Math.ceil(Math.log10(n / 10 + 1))) / 2);
  for (let t = Math.ceil(S.clip.start / step) * step; t < S.clip.end; t += step) {
    tctx.fillRect(tx(t), 0, 1, 5);
    tctx.fillText(String(t), tx(t) + 2, 12);
  }
  const tlData = S.timeline;
  if (tlData) {
    tlData.objects.forEach((o, i) => {
      const y = 18 + i * 14;
      tctx.globalAlpha = 0.3;
      tctx.fillStyle = o.colour;
      for (const [a, b] of o.tracked) tctx.fillRect(tx(a) - w / 2, y, (b - a + 1) * w, 10);
      tctx.globalAlpha = 1;
      for (const [a, b, present] of o.presence) {
        if (present) tctx.fillRect(tx(a) - w / 2, y + 2, (b - a + 1) * w, 6);
      }
      tctx.fillStyle = "#fff";
      for (const f of o.prompted) tctx.fillRect(tx(f) - 1, y - 2, 3, 14);
    });
    tctx.fillStyle = "#e55";
    for (const c of tlData.cuts) tctx.fillRect(tx(c) - w / 2, 14, 2, tl.height - 14);
    tctx.fillStyle = "#fc3";
    for (const m of tlData.memory) tctx.fillRect(tx(m.frame) - 2, tl.height - 8, 4, 4);
  }
  tctx.fillStyle = "#8cf";
  tctx.fillRect(tx(S.frame) - 1, 0, 2, tl.height);
}

// SMPTE timecode as vosfx/io/timecode.py counts it: HH:MM:SS:FF, or HH:MM:SS;FF drop-frame
// (29.97 and 59.94 skip frame numbers 0-1, 0-3 at 59.94, each minute but every tenth)
function tcNominal() { return Math.max(1, Math.round(S.clip.fps || 24)); }
function tcToFrames(tc) {
  const drop = /[;.]/.test(tc);
  const [h, m, s, f] = tc.split(/[:;.]/).map(Number);
  const nominal = tcNominal();
  let frames = ((h * 60 + m) * 60 + s) * nominal + f;
  if (drop) frames -= Math.floor(2 * nominal / 30) * (h * 60 + m - Math.floor((h * 60 + m) / 10));
  return { frames, drop };
}
function tcFromFrames(frames, drop) {
  const nominal = tcNominal();
  if (drop) {
    const d = Math.floor(2 * nominal / 30);
    const per10 = nominal * 600 - 9 * d, perMin = nominal * 60 - d;
    const tens = Math.floor(frames / per10), rem = frames % per10;
    frames += 9 * d * tens + (rem > d ? d * Math.floor((rem - d) / perMin) : 0);
  }
  const pad = (v) => String(v).padStart(2, "0");
  const ff = frames % nominal, ss = Math.floor(frames / nominal) % 60;
  const mm = Math.floor(frames / (nominal * 60)) % 60;
  const hh = Math.floor(frames / (nominal * 3600)) % 24;
  return `${pad(hh)}:${pad(mm)}:${pad(ss)}${drop ? ";" : ":"}${pad(ff)}`;
}
// frame t's timecode: the source's own (a camera's, a plate's first number at its rate) moved
// by t, else counted from 00:00:00:00
function timecode(t) {
  const start = /^\d+:\d+:\d+[:;.]\d+$/.test(S.clip.timecode || "")
    ? tcToFrames(S.clip.timecode) : { frames: 0, drop: false };
  return tcFromFrames(start.frames + t, start.drop);
}
// a numbered sequence's file at position t (shot.1048.exr), else ""
function fileName(t) {
  const files = S.clip.files;
  if (!files) return "";
  const run = files.runs.find(([p, , n]) => p <= t && t < p + n);
  if (!run) return "";
  return files.prefix + String(run[1] + t - run[0]).padStart(files.padding, "0") + files.suffix;
}

function updateLabel() {
  const file = fileName(S.frame);
  $("frame-label").textContent = `frame ${S.frame} / ${S.clip.end - 1}   ` +
    (file ? `${file}   ` : "") + timecode(S.frame);
  document.body.dataset.frame = S.frame;
  updateClear();
}

function scrubTo(e) {
  const r = tl.getBoundingClientRect();
  const n = S.clip.end - S.clip.start;
  showFrame(S.clip.start + Math.floor((e.clientX - r.left) / r.width * n));
}
tl.addEventListener("mousedown", (e) => {
  scrubTo(e);
  const move = (ev) => scrubTo(ev);
  const up = () => { window.removeEventListener("mousemove", move); window.removeEventListener("mouseup", up); };
  window.addEventListener("mousemove", move);
  window.addEventListener("mouseup", up);
});

tl.addEventListener("mousemove", (e) => {  // what the timeline holds under the pointer
  if (!S.clip || !S.timeline) return;
  const r = tl.getBoundingClientRect();
  const t = S.clip.start + Math.floor((e.clientX - r.left) / r.width * (S.clip.end - S.clip.start));
  const lines = [`frame ${t}  ${fileName(t) ? fileName(t) + "  " : ""}${timecode(t)}`];
  if (S.timeline.cuts.includes(t)) lines.push("shot cut");
  for (const m of S.timeline.memory.filter((q) => q.frame === t)) {
    lines.push(`object ${m.obj_id}: ${m.event}`);
  }
  for (const o of S.timeline.objects) {
    if (o.prompted.includes(t)) lines.push(`${o.name}: prompt`);
    const run = o.presence.find(([a, b]) => a <= t && t <= b);
    if (run) lines.push(`${o.name}: ${run[2] ? "present" : "absent"}`);
  }
  tl.title = lines.join("\n");
});

window.addEventListener("keydown", (e) => {
  // a field being typed in, a list or a slider takes its own keys; a ticked checkbox does not
  // keep the picture's keys from working (only Space, which ticks it)
  if (!S.clip || e.target.matches("select, textarea, input:not([type=checkbox])")) return;
  if (e.key === " " && e.target.matches("input[type=checkbox]")) return;
  const big = e.shiftKey ? 10 : 1;
  if (e.key === "ArrowRight") showFrame(S.frame + big);
  else if (e.key === "ArrowLeft") showFrame(S.frame - big);
  else if (e.key === "Home") showFrame(S.clip.start);
  else if (e.key === "End") showFrame(S.clip.end - 1);
  else if (e.key === " ") togglePlay();
  else if (e.key === "Escape" && S.paint) endPaint();
  else if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "s") $("save-job").click();
  else if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") {
    history(e.shiftKey ? "redo" : "undo");
  } else if (e.key === "[" || e.key === "]") jumpToPrompt(e.key === "]" ? 1 : -1);
  else if (e.key === "{" || e.key === "}") jumpToChange(e.key === "}" ? 1 : -1);
  else if (/^[1-9]$/.test(e.key) && !e.ctrlKey && !e.metaKey && !e.altKey) {
    selectObject(Number(e.key) - 1);
  } else return;
  e.preventDefault();
});

function togglePlay() {
  S.playing = !S.playing;
  $("play").textContent = S.playing ? "Pause" : "Play";
  if (S.playing) playStep();
}
function playStep() {
  if (!S.playing) return;
  if (S.frame >= S.clip.end - 1) { togglePlay(); return; }
  const wait = 1000 / (S.clip.fps || 24);
  const t0 = performance.now();
  setTimeout(() => S.playing && showFrame(S.frame + 1), Math.max(0, wait - (performance.now() - t0)));
}
$("play").onclick = togglePlay;

// --- actions ----------------------------------------------------------------------------
async function history(op) {
  if (!mayStopRender(op === "undo" ? "Undo" : "Redo")) return;
  const res = await act(() => api("/api/history", { op }));
  if (res && res.frame !== null) { S.version += 1; showFrame(res.frame, true); }
}
$("undo").onclick = () => history("undo");
$("redo").onclick = () => history("redo");
$("clear-frame").onclick = async () => {
  if (!mayStopRender("Clearing the frame")) return;
  S.version += 1;
  await act(() => api("/api/clear", { obj_id: S.obj, frame: S.frame }), true);
};
$("add-object").onclick = async () => {
  const res = await act(() => api("/api/objects", { op: "add" }));
  if (res) { S.obj = res.obj_id; renderObjects(); if (S.solo) showFrame(S.frame, true); }
};
// Track: every frame; Track to here: what the frames up to the one shown need (check a stretch
// before tracking a long clip; Track goes on from there)
async function track(until) {
  if (!mayStopRender("Tracking")) return;
  try {
    document.body.dataset.tracking = "1";
    $("progress").value = 0;
    $("stop").disabled = false;
    const ended = S.ended;
    const res = await api("/api/track", until === undefined ? {} : { until });
    if (S.ended === ended) S.busy = res.total ? "track" : null;  // not already ended
    $("progress").max = Math.max(1, res.total);
    if (!res.total) {
      document.body.dataset.tracking = "0";
      status("nothing to track");
    } else if (document.body.dataset.tracking === "1") {  // not already finished
      status(`tracking ${res.total} frames...`);
    }
  } catch (err) { document.body.dataset.tracking = "0"; fail(err); }
}
$("track").onclick = () => track();
$("track-here").onclick = () => track(S.frame);
$("stop").onclick = () => api("/api/stop", {}).catch(fail);
// the studio stops the work of its last page when that page goes (closed or reloaded): while a
// render runs the browser asks first
window.addEventListener("beforeunload", (e) => {
  if (S.busy !== "render") return;
  e.preventDefault();
  e.returnValue = "";
});
$("view").onchange = () => { S.view = $("view").value; fit(); showFrame(S.frame, true); };
// the selected object alone in every view: its matte as its own output holds it
$("solo").onchange = () => { S.solo = $("solo").checked; showFrame(S.frame, true); };

// A finishing field's value as the server takes it, or null while a number field holds
// what it cannot take (its step, e.g. a whole number of px², or its minimum; empty; "1." on
// the way to "1.5"): nothing is sent for it until it is put right.
function refineValue(el) {
  if (el.tagName === "SELECT") return el.value;
  if (el.type === "number" && (el.value.trim() === "" || !el.checkValidity())) return null;
  return Number(el.value);
}
function fieldName(el) { return el.closest("label").firstChild.textContent.trim(); }
// what a number field left (blur, Enter) with a value it cannot take becomes: a whole number
// for a field of whole numbers, never under its minimum; empty or unreadable: as it was
function settle(el) {
  if (el.type !== "number" || refineValue(el) !== null) return;
  let v = Number(el.value);
  if (el.value.trim() === "" || !Number.isFinite(v)) v = S.refine[el.dataset.key];
  const step = Number(el.step);
  if (Number.isInteger(step) && step > 0) v = Math.round(v / step) * step;
  if (el.min !== "") v = Math.max(Number(el.min), v);
  el.value = v;
}

let refineTimer = null;
for (const el of document.querySelectorAll("#finishing [data-key]")) {
  el.addEventListener("input", () => {
    if (el.nextElementSibling && el.nextElementSibling.tagName === "OUTPUT") {
      el.nextElementSibling.textContent = el.value;
    }
    clearTimeout(refineTimer);
    if (refineValue(el) === null) {
      const whole = Number.isInteger(Number(el.step)) ? "a whole number" : "a number";
      status(`${fieldName(el)}: ${whole} of at least ${el.min || 0}`);
      return;
    }
    refineTimer = setTimeout(sendRefine, 60);
  });
  el.addEventListener("change", () => {
    if (refineValue(el) !== null) return;
    settle(el);
    clearTimeout(refineTimer);
    refineTimer = setTimeout(sendRefine, 0);
  });
}
async function sendRefine() {
  const values = {};
  for (const el of document.querySelectorAll("#finishing [data-key]")) {
    const v = refineValue(el);
    if (v !== null) values[el.dataset.key] = v;  // (a field still being typed waits)
  }
  try {
    const res = await api("/api/refine", { refine: values });
    S.refine = res.refine;
    showUnsaved(res.unsaved);
    S.version += 1;
    showFrame(S.frame, true);
    status("finishing applied");
    document.body.dataset.refined = String(S.version);
  } catch (err) {
    fail(err);
    // the fields show what the studio runs with, not the refused value
    try { applyState(await api("/api/state")); } catch (e) { /* the banner says it */ }
  }
}

// a frame field's number; an Error unless it is a whole number (1.5 was taken as 1)
function frameField(id, what) {
  const text = $(id).value.trim();
  const v = Number(text);
  if (text === "" || !Number.isInteger(v)) {
    throw new Error(`frames ${what}: expected a whole frame number, found "${text}"`);
  }
  return v;
}

function jobBody() {
  const extra = [...$("extra-formats").selectedOptions].map((o) => o.value)
    .filter((f) => f !== $("format").value);
  return { output: $("output").value, formats: [$("format").value, ...extra],
    preset: $("preset").value,
    start: frameField("range-start", "from"), end: frameField("range-end", "to") + 1,
    overwrite: $("overwrite").checked, each_object: $("each-object").checked,
    alpha_mode: $("alpha-mode").value };
}
$("render").onclick = async () => {
  if (!mayStopRender("Another render")) return;
  try {
    $("render-result").innerHTML = "";
    document.body.dataset.rendered = "";
    const ended = S.ended;
    const res = await api("/api/render", jobBody());
    // a short render may have ended (its event came) before this answer
    if (S.ended === ended) {
      S.busy = "render";
      $("render-progress").value = 0;
      $("stop").disabled = false;
      status("rendering " + res.outputs.join(", "));
    }
  } catch (err) { fail(err); }
};
$("save-job").onclick = async () => {
  // this press's outcome only: an earlier "saved ..." or "not saved ..." goes (a refusal is
  // the banner's, as every failure)
  $("job-result").textContent = "";
  try {
    const body = Object.assign(jobBody(), { path: $("job-path").value });
    let res = await api("/api/save", body);  // a path it cannot save to is refused here
    if (res.exists) {
      if (!confirm(`${res.exists} already exists. Replace it?`)) {
        $("job-result").textContent = "not saved: " + res.exists + " already exists";
        return;
      }
      res = await api("/api/save", Object.assign(body, { replace: true }));
    }
    $("job-result").textContent = "saved " + res.path;
    document.body.dataset.saved = res.path;
    showUnsaved(false);
  } catch (err) { fail(err); }
};
$("done").onclick = async () => {
  try {
    S.doneSent = true;
    await api("/api/done", jobBody());
    status("done: the editor takes it from here; you can close this page");
    document.body.dataset.done = "1";
  } catch (err) { S.doneSent = false; fail(err); }
};

// "tracking 45/289 frames, 0.29 frames/s, about 14 min left": the rate since this track or
// render started (from its second frame, so the model's first call does not count), at
// most twice a second
function progressText(what, done, total, rate) {
  let text = `${what} ${done}/${total} frames`;
  if (rate > 0) {
    const left = (total - done) / rate;
    const eta = left < 90 ? `${Math.ceil(left)} s` : left < 5400 ? `${Math.round(left / 60)} min`
      : `${(left / 3600).toFixed(1)} h`;
    text += `, ${rate < 10 ? rate.toFixed(2) : rate.toFixed(1)} frames/s, about ${eta} left`;
  }
  return text;
}
function progressStatus(what, done, total) {
  const now = performance.now();
  const p = S.progress;
  if (!p || p.what !== what || done < p.done0 || done <= 1) {
    S.progress = { what, t0: now, done0: done, shown: 0 };
    return;
  }
  if (now - p.shown < 500 && done < total) return;
  p.shown = now;
  const rate = (done - p.done0) / Math.max(1e-3, (now - p.t0) / 1000);
  status(progressText(what, done, total, done > p.done0 ? rate : 0));
}

// --- events -----------------------------------------------------------------------------
function connectEvents() {
  const es = new EventSource(`/api/events?token=${TOKEN}`);
  // a refused reconnection closes the stream (403: the studio was restarted on this port);
  // a server gone keeps it reconnecting, and the next action says so
  es.onerror = () => { if (es.readyState === EventSource.CLOSED) fail(new Error(OLD_RUN)); };
  let redrawTimer = null;
  es.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    window.vosfx.events.push(ev.event);
    if (ev.event === "ended") {  // the studio stopped (Done, Ctrl-C, closed): no reconnecting
      es.close();
      S.busy = null;
      if (!S.doneSent) fail(new Error(GONE));
    } else if (ev.event === "frame") {
      $("progress").value = ev.done;
      progressStatus("tracking", ev.done, ev.total);
      if (ev.frame === S.frame) { S.version += 1; showFrame(S.frame, true); }
      if (!redrawTimer) {
        redrawTimer = setTimeout(() => { redrawTimer = null; refreshTimeline(); }, 250);
      }
    } else if (ev.event === "tracked") {
      S.busy = null;
      S.ended += 1;
      document.body.dataset.tracking = "0";
      $("stop").disabled = true;
      S.version += 1;
      status(`tracked ${ev.frames} frames in ${ev.seconds} s`);
      refreshTimeline();
      showFrame(S.frame, true);
    } else if (ev.event === "render") {
      S.busy = "render";
      $("render-progress").max = Math.max(1, ev.total);
      $("render-progress").value = ev.done;
      progressStatus("rendering", ev.done, ev.total);
    } else if (ev.event === "rendered") {
      S.busy = null;
      S.ended += 1;
      $("stop").disabled = true;
      const ul = $("render-result");
      ul.innerHTML = "";
      for (const p of ev.outputs) {
        const li = document.createElement("li");
        li.textContent = p;
        ul.appendChild(li);
      }
      // a numbered input's missing frames: said with the result, not lost in a log
      const warned = (ev.warnings || []).map((w) => `; warning: ${w}`).join("");
      status(`rendered ${ev.frames} frames${warned}`);
      document.body.dataset.rendered = ev.outputs.join("\n");
      refreshTimeline();
    } else if (ev.event === "stopped") {
      S.busy = null;
      S.ended += 1;
      document.body.dataset.tracking = "0";
      $("stop").disabled = true;
      status(ev.kind === "track"
        ? "track stopped; the frames tracked so far are kept: Track again to finish"
        : ev.kind + " stopped; nothing partial was kept");
      refreshTimeline();
    } else if (ev.event === "error") {
      S.busy = null;
      S.ended += 1;
      document.body.dataset.tracking = "0";
      $("stop").disabled = true;
      fail(new Error(ev.message));
    }
  };
}

boot().catch(fail);
