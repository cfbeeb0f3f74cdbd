// The live who-speaks timeline: one row per speaker, drawn on a canvas as the session grows.

export const PALETTE = ["#2f6fdf", "#e07b39", "#2a9d6f", "#c2417a", "#8a5cd6", "#b59a1b", "#1c9bb0", "#6b7a8f"];

export function colorOf(index) {
  return PALETTE[index % PALETTE.length];
}

export class Timeline {
  constructor(canvas) {
    this.canvas = canvas;
    this.reset();
  }

  reset() {
    this.speakers = new Map(); // index -> name
    this.segments = []; // {index, start, end}
    this.open = new Map(); // index -> start (s)
    this.now = 0;
    this.kind = "live";
    this.draw();
  }

  addSpeaker(index, name) {
    if (!this.speakers.has(index)) this.speakers.set(index, name);
  }

  indexOf(name) {
    for (const [index, n] of this.speakers) if (n === name) return index;
    const match = /(\d+)$/.exec(name);
    const index = match ? Number(match[1]) : this.speakers.size;
    this.speakers.set(index, name);
    return index;
  }

  started(index, name, t) {
    this.addSpeaker(index, name);
    this.open.set(index, t);
    this.advance(t);
  }

  stopped(index, t) {
    this.open.delete(index);
    this.advance(t);
  }

  segment(index, name, start, end) {
    this.addSpeaker(index, name);
    this.segments.push({ index, start, end });
    this.advance(end);
  }

  // The final timeline (re-clustered over the whole session) replaces the live one.
  setFinal(segments) {
    this.segments = segments.map((s) => ({ index: this.indexOf(s.speaker), start: s.start_s, end: s.end_s }));
    this.open.clear();
    this.kind = "final";
    for (const s of this.segments) this.advance(s.end);
  }

  advance(t) {
    if (t > this.now) this.now = t;
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 800;
    const rows = Math.max(2, this.speakers.size);
    const rowHeight = 26;
    const top = 22;
    const height = top + rows * rowHeight + 8;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
      canvas.style.height = height + "px";
    }
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const left = 104;
    const right = width - 12;
    const span = Math.max(30, Math.ceil(this.now / 10) * 10);
    const x = (t) => left + ((right - left) * t) / span;

    // time axis
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#667085";
    g.strokeStyle = "#e3e6eb";
    g.lineWidth = 1;
    const tick = span <= 60 ? 5 : span <= 180 ? 15 : span <= 600 ? 60 : 300;
    for (let t = 0; t <= span; t += tick) {
      g.beginPath();
      g.moveTo(Math.round(x(t)) + 0.5, top - 4);
      g.lineTo(Math.round(x(t)) + 0.5, height - 6);
      g.stroke();
      if (x(t) + 30 < width) g.fillText(formatTime(t), x(t) + 3, 12);
    }

    // rows
    const order = [...this.speakers.keys()].sort((a, b) => a - b);
    const rowOf = new Map(order.map((index, row) => [index, row]));
    order.forEach((index, row) => {
      const y = top + row * rowHeight;
      g.fillStyle = colorOf(index);
      g.fillRect(8, y + 8, 10, 10);
      g.fillStyle = "#1d2430";
      g.font = "600 12px system-ui, sans-serif";
      g.fillText(this.speakers.get(index), 24, y + 17);
    });
    const bar = (index, start, end, alpha) => {
      const row = rowOf.get(index);
      if (row === undefined) return;
      const y = top + row * rowHeight + 4;
      g.globalAlpha = alpha;
      g.fillStyle = colorOf(index);
      g.fillRect(x(start), y, Math.max(1.5, x(end) - x(start)), rowHeight - 8);
      g.globalAlpha = 1;
    };
    for (const s of this.segments) bar(s.index, s.start, s.end, 0.9);
    for (const [index, start] of this.open) bar(index, start, Math.max(start, this.now), 0.5);

    // now
    g.strokeStyle = this.kind === "final" ? "#667085" : "#c0392b";
    g.beginPath();
    g.moveTo(Math.round(x(this.now)) + 0.5, top - 4);
    g.lineTo(Math.round(x(this.now)) + 0.5, height - 6);
    g.stroke();
    canvas.dataset.segments = String(this.segments.length);
    canvas.dataset.kind = this.kind;
  }
}

export function formatTime(seconds) {
  const s = Math.floor(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}
