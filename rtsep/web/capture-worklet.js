// AudioWorklet: microphone -> 16-bit PCM messages of `frameSamples` mono samples at the context's rate.
// Runs on the audio rendering thread; the main thread sends each message as one WebSocket binary frame.

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.frameSamples = opts.frameSamples || Math.round(sampleRate / 50); // 20 ms
    this.buffer = new Int16Array(this.frameSamples);
    this.filled = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (input && input.length) {
      const channels = input.length;
      const n = input[0].length;
      for (let i = 0; i < n; i++) {
        let x = input[0][i];
        for (let c = 1; c < channels; c++) x += input[c][i];
        if (channels > 1) x /= channels;
        x = x < -1 ? -1 : x > 1 ? 1 : x;
        this.buffer[this.filled++] = x < 0 ? Math.round(x * 32768) : Math.round(x * 32767);
        if (this.filled === this.frameSamples) {
          this.port.postMessage(this.buffer.buffer, [this.buffer.buffer]);
          this.buffer = new Int16Array(this.frameSamples);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("rtsep-capture", CaptureProcessor);
