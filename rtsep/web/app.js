// rtsep's page: capture the microphone, stream it over WebRTC or WebSocket, and give each speaker a
// player (level meter, mute, solo, download) and a row on the live who-speaks timeline.
// URL parameters: autostart=1, transport=webrtc|ws, max_speakers=N, api_key=KEY (servers that need one).

import { Timeline, colorOf, formatTime } from "./timeline.js";
import { WebRtcTransport } from "./transport-webrtc.js";
import { WsTransport } from "./transport-ws.js";

const $ = (id) => document.getElementById(id);

const MIC_CONSTRAINTS = {
  audio: {
    echoCancellation: false, // these three damage separation
    noiseSuppression: false,
    autoGainControl: false,
    channelCount: 1,
  },
  video: false,
};

const state = {
  transport: null,
  mic: null,
  sessionId: null,
  token: null,
  phase: "idle",
  speakers: new Map(), // index -> {el, audio, analyser, muted, levelMax}
  solo: null,
  monitorCtx: null,
  startedAt: 0,
  timer: null,
};
window.rtsep = state; // for the console

const timeline = new Timeline($("timeline"));

// --- status, log ---

function setStatus(phase, text) {
  state.phase = phase;
  const el = $("status");
  el.dataset.state = phase;
  el.textContent = text || phase;
  $("start").disabled = ["connecting", "live", "stopping"].includes(phase);
  $("stop").disabled = !["connecting", "live"].includes(phase);
  $("transport").disabled = $("start").disabled;
}

function log(text, kind) {
  const li = document.createElement("li");
  const t = state.startedAt ? formatTime((performance.now() - state.startedAt) / 1000) + "  " : "";
  li.textContent = t + text;
  if (kind) li.className = kind;
  const list = $("log");
  list.prepend(li);
  while (list.children.length > 200) list.lastChild.remove();
}

// --- downloads: session resources need the token, so links fetch with it ---

function enableLink(a, href, filename) {
  a.href = href;
  a.download = filename;
  a.classList.remove("disabled");
}

async function download(event) {
  const a = event.target.closest("a.download");
  if (!a) return;
  event.preventDefault();
  if (a.classList.contains("disabled") || !state.token) return;
  try {
    const response = await fetch(a.getAttribute("href"), { headers: { Authorization: `Bearer ${state.token}` } });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    const url = URL.createObjectURL(await response.blob());
    const save = document.createElement("a");
    save.href = url;
    save.download = a.download || "download";
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (err) {
    log(`download failed: ${err.message}`, "error");
  }
}

// --- final tracks: once the session has ended, one player per speaker of the final timeline ---

async function authorizedFetch(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` } });
  if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
  return response;
}

async function showFinalTracks() {
  if (!state.sessionId || !state.token) return;
  const sessionId = state.sessionId;
  try {
    const status = await (await authorizedFetch(`/v1/sessions/${sessionId}`)).json();
    const tracks = Object.entries(status.final_tracks || {});
    if (state.sessionId !== sessionId) return; // a new session started meanwhile
    const list = $("final-tracks");
    list.replaceChildren();
    for (const [i, [speaker, url]] of tracks.entries()) {
      const el = $("final-template").content.firstElementChild.cloneNode(true);
      el.dataset.speaker = speaker;
      el.querySelector(".name").textContent = speaker;
      const index = Number((speaker.match(/(\d+)$/) || [])[1]);
      el.querySelector(".swatch").style.background = colorOf(Number.isFinite(index) ? index : i);
      enableLink(el.querySelector(".track-link"), url, `${sessionId}-${speaker}.wav`);
      const blob = await (await authorizedFetch(url)).blob(); // the player needs the token too
      el.querySelector("audio").src = URL.createObjectURL(blob);
      list.append(el);
    }
    $("final-panel").hidden = tracks.length === 0;
    if (tracks.length) log(`final tracks: ${tracks.map(([speaker]) => speaker).join(", ")}`);
  } catch (err) {
    log(`final tracks: ${err.message}`, "error");
  }
}

// --- speakers ---

function addSpeaker(msg) {
  const known = state.speakers.get(msg.index);
  if (known) {
    if (msg.url && msg.url !== "#") enableLink(known.el.querySelector(".track-link"), msg.url, `${state.sessionId}-${msg.speaker}.wav`);
    return;
  }
  const el = $("speaker-template").content.firstElementChild.cloneNode(true);
  el.dataset.speaker = msg.speaker;
  el.dataset.index = String(msg.index);
  el.dataset.kind = msg.kind || "speaker"; // "source": a separated source, not a diarized speaker
  el.querySelector(".name").textContent = msg.speaker;
  el.querySelector(".swatch").style.background = colorOf(msg.index);
  if (msg.url !== "#") enableLink(el.querySelector(".track-link"), msg.url, `${state.sessionId}-${msg.speaker}.wav`);
  const speaker = { el, audio: el.querySelector("audio"), analyser: null, muted: false, levelMax: 0 };
  el.querySelector(".mute").addEventListener("click", () => {
    speaker.muted = !speaker.muted;
    applyMuting();
  });
  el.querySelector(".solo").addEventListener("click", () => {
    state.solo = state.solo === msg.index ? null : msg.index;
    applyMuting();
  });
  state.speakers.set(msg.index, speaker);
  $("speakers").append(el);
  $("no-speakers").hidden = true;
  if (el.dataset.kind === "speaker") timeline.addSpeaker(msg.index, msg.speaker);
  attachAudio(msg.index, speaker, 0);
  applyMuting();
  log(el.dataset.kind === "source" ? `separated ${msg.speaker}` : `${msg.speaker} joined`);
}

function attachAudio(index, speaker, attempt) {
  const stream = state.transport && state.transport.speakerStream(index);
  if (!stream) {
    if (attempt < 50) setTimeout(() => attachAudio(index, speaker, attempt + 1), 100);
    else log(`no audio track for speaker ${index}`, "error");
    return;
  }
  speaker.audio.srcObject = stream;
  playAudio(speaker.audio);
  const ctx = monitorContext();
  const source = ctx.createMediaStreamSource(stream);
  speaker.analyser = ctx.createAnalyser();
  speaker.analyser.fftSize = 1024;
  source.connect(speaker.analyser);
  speaker.samples = new Float32Array(speaker.analyser.fftSize);
}

function playAudio(audio) {
  audio.play().catch(() => {
    $("unlock-audio").hidden = false; // autoplay refused until the user interacts
  });
}

function monitorContext() {
  if (!state.monitorCtx) state.monitorCtx = new AudioContext();
  if (state.monitorCtx.state === "suspended") state.monitorCtx.resume();
  return state.monitorCtx;
}

function applyMuting() {
  for (const [index, s] of state.speakers) {
    const silent = s.muted || (state.solo !== null && state.solo !== index);
    s.audio.muted = silent;
    s.el.classList.toggle("muted", silent);
    s.el.querySelector(".mute").setAttribute("aria-pressed", String(s.muted));
    s.el.querySelector(".solo").setAttribute("aria-pressed", String(state.solo === index));
  }
}

function updateMeters() {
  for (const s of state.speakers.values()) {
    if (!s.analyser) continue;
    if (!state.transport) {
      s.el.querySelector(".level").style.width = "0%";
      continue;
    }
    s.analyser.getFloatTimeDomainData(s.samples);
    let sum = 0;
    for (const v of s.samples) sum += v * v;
    const rms = Math.sqrt(sum / s.samples.length);
    const level = rms > 0 ? Math.max(0, Math.min(1, (20 * Math.log10(rms) + 60) / 60)) : 0;
    s.levelMax = Math.max(s.levelMax, level);
    s.el.querySelector(".level").style.width = `${(level * 100).toFixed(1)}%`;
    const meter = s.el.querySelector(".meter");
    meter.setAttribute("aria-valuenow", level.toFixed(3));
    s.el.dataset.levelMax = s.levelMax.toFixed(3);
  }
}

function setSpeaking(index, speaking) {
  const s = state.speakers.get(index);
  if (s) s.el.classList.toggle("speaking", speaking);
  const now = $("now-speaking");
  now.replaceChildren();
  for (const [i, sp] of state.speakers) {
    if (!sp.el.classList.contains("speaking")) continue;
    const label = document.createElement("span");
    label.className = "label";
    label.style.background = colorOf(i);
    label.textContent = sp.el.dataset.speaker;
    now.append(label);
  }
  if (!now.children.length) now.textContent = "—";
}

// --- protocol events (the same over both transports) ---

const handlers = {
  onReady(info) {
    state.sessionId = info.session_id;
    state.token = info.token;
    $("session-id").textContent = info.session_id;
    const base = `/v1/sessions/${info.session_id}/timeline`;
    enableLink($("timeline-rttm"), `${base}?format=rttm`, `${info.session_id}.rttm`);
    enableLink($("timeline-json"), `${base}?format=json`, `${info.session_id}.json`);
    setStatus("live", `live (${state.transport.name === "ws" ? "WebSocket" : "WebRTC"})`);
    log(`session ${info.session_id} over ${state.transport.name}`);
  },

  onEvent(msg) {
    switch (msg.type) {
      case "track":
        addSpeaker(msg);
        break;
      case "speaker":
        if (!state.speakers.has(msg.index)) addSpeaker({ speaker: msg.speaker, index: msg.index, url: "#" });
        if (msg.event === "started") timeline.started(msg.index, msg.speaker, msg.time_s);
        else timeline.stopped(msg.index, msg.time_s);
        setSpeaking(msg.index, msg.event === "started");
        break;
      case "segment":
        timeline.segment(msg.index, msg.speaker, msg.start_s, msg.end_s);
        break;
      case "timeline":
        if (msg.kind === "final") {
          timeline.setFinal(msg.segments);
          log(`final timeline: ${msg.segments.length} segments`);
        }
        break;
      case "stats":
        timeline.advance(msg.processed_s);
        $("stats").textContent =
          `audio ${msg.audio_in_s.toFixed(1)} s · processed ${msg.processed_s.toFixed(1)} s · ` +
          `RTF ${msg.real_time_factor.toFixed(3)}` + (msg.dropped_chunks ? ` · dropped ${msg.dropped_chunks}` : "");
        break;
      case "error":
        log(`error ${msg.code}: ${msg.message}`, "error");
        setStatus("error", `error: ${msg.message}`);
        break;
      case "done":
        log(`done: ${msg.duration_s.toFixed(1)} s, ${msg.speakers.length} speaker(s)`);
        setStatus("done", "done");
        showFinalTracks();
        break;
      default:
        break;
    }
    timeline.draw();
    $("timeline-kind").textContent = timeline.kind === "final" ? "· final (re-clustered)" : "· live";
  },

  onError(message) {
    log(message, "error");
    if (state.phase !== "done") setStatus("error", `error: ${message}`);
  },

  onClosed() {
    if (state.phase === "live" || state.phase === "connecting" || state.phase === "stopping") {
      setStatus(state.phase === "stopping" ? "done" : "ended", state.phase === "stopping" ? "done" : "ended");
    }
    finish();
  },
};

// --- start / stop ---

async function start() {
  if (state.transport) finish();
  $("timeline-kind").textContent = "";
  reset();
  const kind = $("transport").value;
  const maxSpeakers = Number($("max-speakers").value) || null;
  setStatus("connecting", "connecting…");
  try {
    monitorContext();
    state.mic = await navigator.mediaDevices.getUserMedia(MIC_CONSTRAINTS);
    state.transport = kind === "ws" ? new WsTransport(handlers) : new WebRtcTransport(handlers);
    state.startedAt = performance.now();
    state.timer = setInterval(tick, 50);
    const apiKey = new URLSearchParams(location.search).get("api_key") || null;
    await state.transport.start(state.mic, { maxSpeakers, apiKey });
  } catch (err) {
    handlers.onError(err.message || String(err));
    finish();
  }
}

async function stop() {
  if (!state.transport) return;
  setStatus("stopping", "stopping…");
  await state.transport.stop();
}

function tick() {
  updateMeters();
  if (state.phase === "live" && timeline.kind === "live") {
    // between events, the timeline follows the clock (audio arrives in real time)
    timeline.advance(Math.max(0, (performance.now() - state.startedAt) / 1000 - 0.6));
  }
  timeline.draw();
}

function finish() {
  if (state.mic) for (const track of state.mic.getTracks()) track.stop();
  state.mic = null;
  if (state.transport) state.transport.close();
  state.transport = null;
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
  updateMeters();
  timeline.draw();
}

function reset() {
  state.sessionId = null;
  state.token = null;
  state.solo = null;
  state.speakers.clear();
  $("speakers").replaceChildren();
  $("no-speakers").hidden = false;
  $("session-id").textContent = "";
  $("stats").textContent = "";
  $("now-speaking").textContent = "—";
  for (const audio of $("final-tracks").querySelectorAll("audio")) if (audio.src) URL.revokeObjectURL(audio.src);
  $("final-tracks").replaceChildren();
  $("final-panel").hidden = true;
  for (const id of ["timeline-rttm", "timeline-json"]) $(id).classList.add("disabled");
  timeline.reset();
}

function init() {
  const params = new URLSearchParams(location.search);
  const transport = params.get("transport");
  if (transport === "ws" || transport === "webrtc") $("transport").value = transport;
  if (params.get("max_speakers")) $("max-speakers").value = params.get("max_speakers");
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", stop);
  $("unlock-audio").addEventListener("click", () => {
    $("unlock-audio").hidden = true;
    monitorContext();
    if (state.transport) state.transport.resumeAudio();
    for (const s of state.speakers.values()) playAudio(s.audio);
  });
  document.addEventListener("click", download);
  window.addEventListener("resize", () => timeline.draw());
  setStatus("idle");
  $("now-speaking").textContent = "—";
  if (params.get("autostart") === "1") start();
}

init();
