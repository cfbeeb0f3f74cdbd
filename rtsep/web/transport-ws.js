// WebSocket transport: the microphone through an AudioWorklet as 16-bit PCM at 48 kHz (WS /v1/stream);
// speakers' audio comes back as binary frames and is played by one AudioWorklet with one output per speaker.

import { SOURCE_TRACK_BASE, decodeAudioFrame } from "./protocol.js";

const CAPTURE_RATE_HZ = 48000;
const PREBUFFER_S = 0.1;
const CAPACITY_S = 1.0;

export class WsTransport {
  constructor(handlers) {
    this.handlers = handlers; // onReady(info), onEvent(msg), onError(message), onClosed()
    this.ws = null;
    this.captureCtx = null;
    this.playCtx = null;
    this.player = null;
    this.streams = new Map(); // speaker index -> MediaStream
    this.done = null;
  }

  get name() {
    return "ws";
  }

  async start(mic, { maxSpeakers, apiKey }) {
    this.captureCtx = new AudioContext({ sampleRate: CAPTURE_RATE_HZ, latencyHint: "interactive" });
    await this.captureCtx.audioWorklet.addModule("capture-worklet.js");
    const source = this.captureCtx.createMediaStreamSource(mic);
    const capture = new AudioWorkletNode(this.captureCtx, "rtsep-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { frameSamples: Math.round(this.captureCtx.sampleRate / 50) },
    });
    const sink = this.captureCtx.createGain(); // keeps the worklet pulled, plays nothing
    sink.gain.value = 0;
    source.connect(capture).connect(sink).connect(this.captureCtx.destination);

    // how many separated-source tracks to expect besides the speakers (same endpoint as WebRTC's)
    const config = await (await fetch("/v1/webrtc/config")).json();
    this.sources = config.sources || 0;
    const url = new URL("/v1/stream", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (apiKey) url.searchParams.set("api_key", apiKey); // browsers cannot set WebSocket headers
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error("could not connect to " + url));
    });
    const start = {
      type: "start",
      sample_rate: this.captureCtx.sampleRate,
      encoding: "pcm_s16le",
      channels: 1,
      client: "rtsep-web",
    };
    if (maxSpeakers) start.max_speakers = maxSpeakers;
    ws.send(JSON.stringify(start));
    capture.port.onmessage = (event) => {
      if (ws.readyState === WebSocket.OPEN && !this.stopping) ws.send(event.data);
    };
    ws.onmessage = (event) => this.onMessage(event.data);
    ws.onclose = (event) => {
      capture.port.onmessage = null;
      if (event.code !== 1000 && !this.errored) {
        this.handlers.onError(`connection closed (${event.code}${event.reason ? ": " + event.reason : ""})`);
      }
      this.handlers.onClosed();
      if (this.done) this.done();
    };
  }

  async onMessage(data) {
    if (typeof data !== "string") {
      if (!this.player) return;
      const frame = decodeAudioFrame(data);
      const output = this.outputOf(frame.track);
      if (output === null) return;
      this.player.port.postMessage(
        { type: "audio", index: output, start: frame.startSample, samples: frame.samples },
        [frame.samples.buffer],
      );
      return;
    }
    const msg = JSON.parse(data);
    if (msg.type === "ready") {
      await this.setUpPlayer(msg);
      this.handlers.onReady(msg);
    } else {
      if (msg.type === "error") this.errored = true;
      this.handlers.onEvent(msg);
    }
  }

  async setUpPlayer(ready) {
    // a context at the model rate, so the worklet works in the server's sample positions
    this.playCtx = new AudioContext({ sampleRate: ready.sample_rate, latencyHint: "interactive" });
    await this.playCtx.audioWorklet.addModule("player-worklet.js");
    this.maxSpeakers = ready.max_speakers;
    const outputs = ready.max_speakers + this.sources; // speakers first, then the separated sources
    this.player = new AudioWorkletNode(this.playCtx, "rtsep-player", {
      numberOfInputs: 0,
      numberOfOutputs: outputs,
      outputChannelCount: Array(outputs).fill(1),
      processorOptions: {
        prebufferSamples: Math.round(PREBUFFER_S * ready.sample_rate),
        capacitySamples: Math.round(CAPACITY_S * ready.sample_rate),
      },
    });
  }

  // The player output of a track index (speaker k, or SOURCE_TRACK_BASE + k for source k).
  outputOf(track) {
    const output = track >= SOURCE_TRACK_BASE ? this.maxSpeakers + track - SOURCE_TRACK_BASE : track;
    return this.player && output < this.player.numberOfOutputs ? output : null;
  }

  // The MediaStream that carries track `index` (an <audio> element plays it).
  speakerStream(index) {
    const output = this.outputOf(index);
    if (output === null) return null;
    if (!this.streams.has(output)) {
      const dest = this.playCtx.createMediaStreamDestination();
      this.player.connect(dest, output);
      this.streams.set(output, dest.stream);
    }
    return this.streams.get(output);
  }

  resumeAudio() {
    for (const ctx of [this.captureCtx, this.playCtx]) if (ctx && ctx.state === "suspended") ctx.resume();
  }

  // Ask for a clean end: the server flushes, sends `done` and closes with 1000.
  async stop(timeoutMs = 15000) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return this.close();
    this.stopping = true;
    const closed = new Promise((resolve) => (this.done = resolve));
    this.ws.send(JSON.stringify({ type: "stop" }));
    await Promise.race([closed, new Promise((r) => setTimeout(r, timeoutMs))]);
    this.close();
  }

  close() {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
    for (const ctx of [this.captureCtx, this.playCtx]) if (ctx && ctx.state !== "closed") ctx.close();
  }
}
