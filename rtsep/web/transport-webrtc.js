// WebRTC transport: POST /v1/webrtc/offer. The microphone goes out on a sendonly transceiver; recvonly
// transceivers are the slots the server fills (a `slot` message maps a track, a speaker or a separated
// source, to a transceiver mid); a data channel carries the same JSON events as the WebSocket path, and `stop`.

export class WebRtcTransport {
  constructor(handlers) {
    this.handlers = handlers; // onReady(info), onEvent(msg), onError(message), onClosed()
    this.pc = null;
    this.channel = null;
    this.byMid = new Map(); // transceiver mid -> MediaStream
    this.midOf = new Map(); // speaker index -> mid
    this.done = null;
  }

  get name() {
    return "webrtc";
  }

  async start(mic, { maxSpeakers, apiKey }) {
    const config = await fetchJson("/v1/webrtc/config");
    const speakers = Math.max(1, Math.min(maxSpeakers || config.max_speakers, config.max_speakers));
    const slots = speakers + (config.sources || 0); // separated sources (if any) take slots first
    const pc = new RTCPeerConnection({ iceServers: config.ice_servers });
    this.pc = pc;
    pc.addTransceiver(mic.getAudioTracks()[0], { direction: "sendonly", streams: [mic] });
    for (let i = 0; i < slots; i++) pc.addTransceiver("audio", { direction: "recvonly" });
    pc.ontrack = (event) => this.byMid.set(event.transceiver.mid, new MediaStream([event.track]));
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") this.handlers.onError("the WebRTC connection failed");
      if (["failed", "closed"].includes(pc.connectionState)) this.finished();
    };
    const channel = pc.createDataChannel("events", { ordered: true });
    this.channel = channel;
    channel.onmessage = (event) => this.onMessage(JSON.parse(event.data));
    channel.onclose = () => this.finished();

    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringComplete(pc, 3000); // the server takes whole offers (no trickle ICE)
    const body = { sdp: pc.localDescription.sdp, type: "offer", client: "rtsep-web", max_speakers: speakers };
    const answer = await fetchJson("/v1/webrtc/offer", {
      method: "POST",
      headers: apiKey ? { "Content-Type": "application/json", "X-API-Key": apiKey } : { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
    this.handlers.onReady(answer);
  }

  onMessage(msg) {
    if (msg.type === "ready") return; // the answer carried the same facts
    if (msg.type === "slot") {
      if (msg.mid !== null) this.midOf.set(msg.index, msg.mid);
      return;
    }
    if (msg.type === "done") {
      this.handlers.onEvent(msg);
      if (this.done) this.done();
      return;
    }
    this.handlers.onEvent(msg);
  }

  speakerStream(index) {
    const mid = this.midOf.get(index);
    return mid === undefined ? null : this.byMid.get(mid) || null;
  }

  resumeAudio() {}

  finished() {
    if (this.closedOnce) return;
    this.closedOnce = true;
    this.handlers.onClosed();
    if (this.done) this.done();
  }

  async stop(timeoutMs = 15000) {
    if (this.channel && this.channel.readyState === "open") {
      const done = new Promise((resolve) => (this.done = resolve));
      this.channel.send(JSON.stringify({ type: "stop" }));
      await Promise.race([done, new Promise((r) => setTimeout(r, timeoutMs))]);
    }
    this.close();
  }

  close() {
    if (this.pc && this.pc.connectionState !== "closed") this.pc.close();
    this.finished();
  }
}

async function fetchJson(url, init) {
  const response = await fetch(url, init);
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    /* not JSON */
  }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.statusText;
    throw new Error(`${url}: ${response.status} ${detail}`);
  }
  return body;
}

function iceGatheringComplete(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}
