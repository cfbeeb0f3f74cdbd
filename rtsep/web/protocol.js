// Protocol v1 pieces the page needs (see docs/protocol.md): the binary audio frame header.

export const HEADER_BYTES = 24;
export const SOURCE_TRACK_BASE = 0x8000; // track index of separated source k: 0x8000 + k
const MAGIC = [0x52, 0x54, 0x53, 0x41]; // "RTSA"
const ENCODINGS = { 1: "pcm_s16le", 2: "pcm_f32le" };

// ArrayBuffer -> {track, startSample, sampleRate, samples: Float32Array}
export function decodeAudioFrame(buffer) {
  if (buffer.byteLength < HEADER_BYTES) throw new Error(`audio frame of ${buffer.byteLength} bytes is too short`);
  const view = new DataView(buffer);
  for (let i = 0; i < 4; i++) {
    if (view.getUint8(i) !== MAGIC[i]) throw new Error("bad audio frame magic");
  }
  const version = view.getUint8(4);
  if (version !== 1) throw new Error(`unsupported audio frame version ${version}`);
  const encoding = ENCODINGS[view.getUint8(5)];
  if (!encoding) throw new Error(`unknown audio frame encoding ${view.getUint8(5)}`);
  const track = view.getUint16(6, true);
  const startSample = Number(view.getBigUint64(8, true));
  const sampleRate = view.getUint32(16, true);
  const count = view.getUint32(20, true);
  let samples;
  if (encoding === "pcm_f32le") {
    samples = new Float32Array(buffer.slice(HEADER_BYTES, HEADER_BYTES + 4 * count));
  } else {
    const pcm = new Int16Array(buffer, HEADER_BYTES, count);
    samples = new Float32Array(count);
    for (let i = 0; i < count; i++) samples[i] = pcm[i] / 32768;
  }
  return { track, startSample, sampleRate, samples };
}
