// AudioWorklet: plays the speakers' audio received over the WebSocket, one output per speaker.
// Same policy as the server's WebRTC playout (rtsep/transport/webrtc/playout.py, Playout): all speakers on
// one timeline of absolute sample positions, so turns stay aligned; after a start or once the buffer
// ran dry, playback resumes `prebufferSamples` before the new audio; silence on underrun (without
// advancing); audio for positions already played is dropped; past `capacitySamples` the oldest goes.
// The context runs at the server's model rate, so positions are context samples.

class PlayerProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.slots = options.numberOfOutputs;
    this.capacity = opts.capacitySamples || sampleRate;
    this.prebuffer = opts.prebufferSamples || Math.round(sampleRate / 10);
    this.ring = Array.from({ length: this.slots }, () => new Float32Array(this.capacity));
    this.readPos = null;
    this.writeEnd = null;
    this.underrun = 0;
    this.dropped = 0;
    this.late = 0;
    this.port.onmessage = (event) => {
      const m = event.data;
      if (m.type === "audio") this.write(m.index, m.start, m.samples);
    };
  }

  mod(p) {
    return ((p % this.capacity) + this.capacity) % this.capacity;
  }

  clear(from, to) {
    const n = Math.min(to - from, this.capacity);
    for (let p = from; p < from + n; p++) {
      const i = this.mod(p);
      for (const ring of this.ring) ring[i] = 0;
    }
  }

  advanceTo(position) {
    if (position <= this.readPos) return;
    this.clear(this.readPos, position);
    this.readPos = position;
  }

  write(slot, start, samples) {
    if (slot < 0 || slot >= this.slots || !samples.length) return;
    if (this.readPos === null) {
      this.readPos = start - this.prebuffer;
      this.writeEnd = this.readPos;
    } else if (this.writeEnd <= this.readPos && start - this.prebuffer > this.readPos) {
      this.advanceTo(start - this.prebuffer);
    }
    const end = start + samples.length;
    if (end - this.readPos > this.capacity) {
      const before = this.readPos;
      this.advanceTo(end - this.capacity);
      this.dropped += this.readPos - before;
    }
    let offset = 0;
    if (start < this.readPos) {
      offset = Math.min(samples.length, this.readPos - start);
      this.late += offset;
    }
    const ring = this.ring[slot];
    for (let k = offset; k < samples.length; k++) ring[this.mod(start + k)] = samples[k];
    this.writeEnd = Math.max(this.writeEnd, end);
  }

  process(inputs, outputs) {
    const n = outputs[0][0].length;
    if (this.readPos === null) return true;
    const take = Math.max(0, Math.min(n, this.writeEnd - this.readPos));
    for (let s = 0; s < this.slots; s++) {
      const out = outputs[s][0];
      const ring = this.ring[s];
      for (let k = 0; k < take; k++) {
        const i = this.mod(this.readPos + k);
        out[k] = ring[i];
        ring[i] = 0;
      }
      for (let c = 1; c < outputs[s].length; c++) outputs[s][c].set(out);
    }
    this.readPos += take;
    this.underrun += n - take;
    return true;
  }
}

registerProcessor("rtsep-player", PlayerProcessor);
