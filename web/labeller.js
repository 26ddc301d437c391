// The labeller's canvas: one image drawn under a view transform (zoom with the wheel, pan with the middle button
// or Space + drag), boxes drawn, selected, moved and resized with the mouse, dashed region proposals, prompt
// points and a segment polygon. It keeps no server state: the page gives it boxes and is told of each edit
// through callbacks. Coordinates in and out are normalised to [0, 1] of the image, like the Custom Vision API.

const HANDLE = 7;
const MIN_SIDE = 0.004;
const PALETTE = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4', '#f032e6', '#9a6324', '#469990', '#800000'];

/** A colour per tag index. */
export const tagColour = (i) => PALETTE[((i % PALETTE.length) + PALETTE.length) % PALETTE.length];

/**
 * The canvas labeller. `opts`: `image` (a loaded HTMLImageElement), `mode` ('box' | 'segment'), callbacks
 * `onDraw(box)`, `onChange(id, box)` (moved or resized), `onSelect(id|null)`, `onPrompt({points, boundingBox})`,
 * `onProposal(proposal)`, and `colourOf(tagId)`, `labelOf(tagId)`.
 */
export class Labeller {
  constructor(canvas, opts) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.opts = opts;
    this.img = opts.image;
    this.boxes = [];
    this.proposals = [];
    this.points = [];
    this.promptBox = null;
    this.polygons = [];
    this.selected = null;
    this.mode = opts.mode || 'box';
    this.view = { scale: 1, ox: 0, oy: 0 };
    this.drag = null;
    this.space = false;
    this.resizeObserver = new ResizeObserver(() => this.fit());
    this.resizeObserver.observe(canvas.parentElement);
    this.handlers = {
      pointerdown: (e) => this.down(e), pointermove: (e) => this.move(e), pointerup: (e) => this.up(e),
      wheel: (e) => this.wheel(e), contextmenu: (e) => e.preventDefault(),
    };
    for (const [k, f] of Object.entries(this.handlers)) canvas.addEventListener(k, f, k === 'wheel' ? { passive: false } : undefined);
    this.keys = {
      keydown: (e) => { if (e.code === 'Space' && e.target === document.body) { this.space = true; e.preventDefault(); } },
      keyup: (e) => { if (e.code === 'Space') this.space = false; },
    };
    for (const [k, f] of Object.entries(this.keys)) window.addEventListener(k, f);
    this.fit();
  }

  /** Removes the listeners. */
  destroy() {
    this.resizeObserver.disconnect();
    for (const [k, f] of Object.entries(this.handlers)) this.canvas.removeEventListener(k, f);
    for (const [k, f] of Object.entries(this.keys)) window.removeEventListener(k, f);
  }

  /** Fits the whole image in the canvas. */
  fit() {
    const parent = this.canvas.parentElement;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(200, parent.clientWidth), hgt = Math.max(200, parent.clientHeight);
    this.canvas.width = Math.round(w * dpr);
    this.canvas.height = Math.round(hgt * dpr);
    this.canvas.style.width = `${w}px`;
    this.canvas.style.height = `${hgt}px`;
    this.dpr = dpr;
    const s = Math.min(w / this.img.naturalWidth, hgt / this.img.naturalHeight);
    this.view = { scale: s, ox: (w - this.img.naturalWidth * s) / 2, oy: (hgt - this.img.naturalHeight * s) / 2 };
    this.draw();
  }

  setMode(mode) { this.mode = mode; this.canvas.dataset.mode = mode; this.draw(); }
  setBoxes(boxes) { this.boxes = boxes; if (!boxes.some((b) => b.id === this.selected)) this.selected = null; this.draw(); }
  setProposals(p) { this.proposals = p; this.draw(); }
  setPolygons(p) { this.polygons = p; this.draw(); }
  clearPrompt() { this.points = []; this.promptBox = null; this.polygons = []; this.draw(); }
  select(id) { this.selected = id; this.opts.onSelect && this.opts.onSelect(id); this.draw(); }

  // ---- coordinates: client px ⇄ normalised image
  toImage(e) {
    const r = this.canvas.getBoundingClientRect();
    const x = (e.clientX - r.left - this.view.ox) / this.view.scale / this.img.naturalWidth;
    const y = (e.clientY - r.top - this.view.oy) / this.view.scale / this.img.naturalHeight;
    return { x, y };
  }
  toScreen(x, y) {
    return [this.view.ox + x * this.img.naturalWidth * this.view.scale, this.view.oy + y * this.img.naturalHeight * this.view.scale];
  }
  /** Page coordinates of a normalised point (what a test clicks). */
  pagePoint(x, y) {
    const r = this.canvas.getBoundingClientRect();
    const [sx, sy] = this.toScreen(x, y);
    return { x: r.left + sx, y: r.top + sy };
  }

  /** The smallest proposal containing `p`: the most specific one under the pointer. */
  proposalAt(p) {
    const inside = this.proposals.filter((q) => p.x >= q.left && p.x <= q.left + q.width && p.y >= q.top && p.y <= q.top + q.height);
    return inside.sort((a, b) => a.width * a.height - b.width * b.height)[0];
  }

  hit(p) {
    const tol = HANDLE / this.view.scale;
    const tx = tol / this.img.naturalWidth, ty = tol / this.img.naturalHeight;
    const order = [...this.boxes].reverse();
    if (this.selected) order.sort((a) => (a.id === this.selected ? -1 : 1));
    for (const b of order) {
      const corners = { nw: [b.left, b.top], ne: [b.left + b.width, b.top], sw: [b.left, b.top + b.height], se: [b.left + b.width, b.top + b.height] };
      for (const [k, [cx, cy]] of Object.entries(corners)) {
        if (Math.abs(p.x - cx) <= tx && Math.abs(p.y - cy) <= ty) return { box: b, handle: k };
      }
      if (p.x >= b.left && p.x <= b.left + b.width && p.y >= b.top && p.y <= b.top + b.height) return { box: b, handle: 'move' };
    }
    return null;
  }

  down(e) {
    this.canvas.setPointerCapture(e.pointerId);
    const p = this.toImage(e);
    if (e.button === 1 || this.space) {
      this.drag = { kind: 'pan', sx: e.clientX, sy: e.clientY, ox: this.view.ox, oy: this.view.oy };
      return;
    }
    if (this.mode === 'segment') {
      if (e.button === 2) { this.addPoint(p, 0); return; }
      this.drag = { kind: 'prompt', start: p, now: p };
      return;
    }
    if (e.button !== 0) return;
    const prop = this.proposalAt(p);
    const hit = this.hit(p);
    if (hit) {
      this.select(hit.box.id);
      this.drag = { kind: hit.handle, box: hit.box, start: p, orig: { ...hit.box } };
      return;
    }
    if (prop && this.opts.onProposal) {
      this.opts.onProposal(prop);
      return;
    }
    this.select(null);
    this.drag = { kind: 'draw', start: p, now: p };
  }

  move(e) {
    const d = this.drag;
    if (!d) {
      const hit = this.mode === 'box' && this.hit(this.toImage(e));
      this.canvas.style.cursor = this.space ? 'grab' : hit ? (hit.handle === 'move' ? 'move' : `${hit.handle}-resize`) : 'crosshair';
      return;
    }
    if (d.kind === 'pan') {
      this.view.ox = d.ox + (e.clientX - d.sx);
      this.view.oy = d.oy + (e.clientY - d.sy);
      this.draw();
      return;
    }
    const p = this.toImage(e);
    d.now = p;
    if (d.kind === 'move' || ['nw', 'ne', 'sw', 'se'].includes(d.kind)) {
      const o = d.orig, dx = p.x - d.start.x, dy = p.y - d.start.y;
      let x0 = o.left, y0 = o.top, x1 = o.left + o.width, y1 = o.top + o.height;
      if (d.kind === 'move') {
        const cdx = Math.min(Math.max(dx, -x0), 1 - x1), cdy = Math.min(Math.max(dy, -y0), 1 - y1);
        x0 += cdx; x1 += cdx; y0 += cdy; y1 += cdy;
      } else {
        if (d.kind.includes('w')) x0 = clamp(o.left + dx); else x1 = clamp(o.left + o.width + dx);
        if (d.kind.includes('n')) y0 = clamp(o.top + dy); else y1 = clamp(o.top + o.height + dy);
      }
      Object.assign(d.box, norm(x0, y0, x1, y1));
      d.moved = true;
    }
    this.draw();
  }

  up(e) {
    const d = this.drag;
    this.drag = null;
    if (!d) return;
    if (d.kind === 'draw') {
      const b = norm(clamp(d.start.x), clamp(d.start.y), clamp(d.now.x), clamp(d.now.y));
      if (b.width > MIN_SIDE * 2 && b.height > MIN_SIDE * 2) this.opts.onDraw(b);
    } else if (d.kind === 'prompt') {
      const b = norm(clamp(d.start.x), clamp(d.start.y), clamp(d.now.x), clamp(d.now.y));
      if (b.width > 0.01 && b.height > 0.01) {
        this.promptBox = b;
        this.emitPrompt();
      } else if (e.button === 0) {
        this.addPoint(d.start, 1);
      }
    } else if (d.moved && d.box.width > MIN_SIDE && d.box.height > MIN_SIDE) {
      this.opts.onChange(d.box.id, { left: d.box.left, top: d.box.top, width: d.box.width, height: d.box.height }, d.orig);
    } else if (d.moved) {
      Object.assign(d.box, d.orig);
    }
    this.draw();
  }

  addPoint(p, label) {
    if (p.x < 0 || p.y < 0 || p.x > 1 || p.y > 1) return;
    this.points.push({ x: +p.x.toFixed(5), y: +p.y.toFixed(5), label });
    this.emitPrompt();
  }

  emitPrompt() {
    const prompt = {};
    if (this.points.length) prompt.points = this.points;
    if (this.promptBox) {
      const b = this.promptBox;
      prompt.boundingBox = { xMin: b.left, yMin: b.top, xMax: b.left + b.width, yMax: b.top + b.height };
    }
    this.draw();
    this.opts.onPrompt && this.opts.onPrompt(prompt);
  }

  wheel(e) {
    e.preventDefault();
    const r = this.canvas.getBoundingClientRect();
    const mx = e.clientX - r.left, my = e.clientY - r.top;
    const f = Math.exp(-e.deltaY * 0.0015);
    const s = Math.min(40, Math.max(0.05, this.view.scale * f));
    const k = s / this.view.scale;
    this.view = { scale: s, ox: mx - (mx - this.view.ox) * k, oy: my - (my - this.view.oy) * k };
    this.draw();
  }

  /** Zooms by `f` about the centre (the +/− buttons). */
  zoom(f) {
    const w = this.canvas.width / this.dpr, hgt = this.canvas.height / this.dpr;
    this.wheel({ preventDefault() {}, clientX: this.canvas.getBoundingClientRect().left + w / 2,
      clientY: this.canvas.getBoundingClientRect().top + hgt / 2, deltaY: -Math.log(f) / 0.0015 });
  }

  draw() {
    const c = this.ctx;
    c.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    c.clearRect(0, 0, this.canvas.width, this.canvas.height);
    c.imageSmoothingQuality = 'high';
    c.drawImage(this.img, this.view.ox, this.view.oy, this.img.naturalWidth * this.view.scale, this.img.naturalHeight * this.view.scale);
    this.canvas.dataset.view = `${this.view.scale},${this.view.ox},${this.view.oy}`;
    const rect = (b) => {
      const [x0, y0] = this.toScreen(b.left, b.top);
      const [x1, y1] = this.toScreen(b.left + b.width, b.top + b.height);
      return [x0, y0, x1 - x0, y1 - y0];
    };
    c.lineWidth = 1.5;
    c.setLineDash([6, 4]);
    c.strokeStyle = '#ffd400';
    for (const p of this.proposals) c.strokeRect(...rect(p));
    c.setLineDash([]);
    for (const b of this.boxes) {
      const col = this.opts.colourOf(b.tagId);
      const [x, y, w, hh] = rect(b);
      c.lineWidth = b.id === this.selected ? 3 : 2;
      c.strokeStyle = col;
      c.strokeRect(x, y, w, hh);
      c.fillStyle = `${col}22`;
      c.fillRect(x, y, w, hh);
      const label = this.opts.labelOf(b.tagId);
      c.font = '12px sans-serif';
      const tw = c.measureText(label).width + 8;
      c.fillStyle = col;
      c.fillRect(x, y - 16, tw, 16);
      c.fillStyle = '#fff';
      c.fillText(label, x + 4, y - 4);
      if (b.id === this.selected) {
        for (const [hx, hy] of [[x, y], [x + w, y], [x, y + hh], [x + w, y + hh]]) {
          c.fillStyle = '#fff';
          c.fillRect(hx - HANDLE / 2, hy - HANDLE / 2, HANDLE, HANDLE);
          c.strokeRect(hx - HANDLE / 2, hy - HANDLE / 2, HANDLE, HANDLE);
        }
      }
    }
    const d = this.drag;
    if (d && (d.kind === 'draw' || d.kind === 'prompt')) {
      c.strokeStyle = d.kind === 'prompt' ? '#00e5ff' : '#fff';
      c.setLineDash([4, 3]);
      c.strokeRect(...rect(norm(d.start.x, d.start.y, d.now.x, d.now.y)));
      c.setLineDash([]);
    }
    if (this.promptBox) {
      c.strokeStyle = '#00e5ff';
      c.setLineDash([4, 3]);
      c.strokeRect(...rect(this.promptBox));
      c.setLineDash([]);
    }
    for (const poly of this.polygons) {
      c.beginPath();
      poly.forEach((v, i) => { const [x, y] = this.toScreen(v.x, v.y); if (i) c.lineTo(x, y); else c.moveTo(x, y); });
      c.closePath();
      c.fillStyle = 'rgba(0, 229, 255, 0.3)';
      c.fill();
      c.strokeStyle = '#00e5ff';
      c.lineWidth = 2;
      c.stroke();
    }
    for (const p of this.points) {
      const [x, y] = this.toScreen(p.x, p.y);
      c.beginPath();
      c.arc(x, y, 5, 0, Math.PI * 2);
      c.fillStyle = p.label ? '#2ecc40' : '#ff4136';
      c.fill();
      c.strokeStyle = '#fff';
      c.lineWidth = 1.5;
      c.stroke();
    }
  }
}

const clamp = (v) => Math.min(1, Math.max(0, v));
function norm(x0, y0, x1, y1) {
  const left = Math.min(x0, x1), top = Math.min(y0, y1);
  return { left, top, width: Math.abs(x1 - x0), height: Math.abs(y1 - y0) };
}

/** True when the normalised point `p` lies inside `poly` (even-odd rule). */
export function insidePolygon(p, poly) {
  let inside = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const a = poly[i], b = poly[j];
    if ((a.y > p.y) !== (b.y > p.y) && p.x < ((b.x - a.x) * (p.y - a.y)) / (b.y - a.y) + a.x) inside = !inside;
  }
  return inside;
}

/** Twice the area of a polygon. */
const area2 = (poly) => Math.abs(poly.reduce((s, a, i) => { const b = poly[(i + 1) % poly.length]; return s + a.x * b.y - b.x * a.y; }, 0));

/**
 * The parts of a segment that make the object: the polygons under an object (label 1) point, or, with a box
 * prompt or no such polygon, every polygon inside the prompt box or else the largest. Fragments that GrabCut
 * leaves elsewhere do not stretch the region.
 */
export function objectPolygons(polys, points, box) {
  const positives = (points || []).filter((p) => p.label !== 0);
  const hit = polys.filter((poly) => positives.some((p) => insidePolygon(p, poly)));
  if (hit.length) return hit;
  if (box) return polys;
  return polys.length ? [polys.slice().sort((a, b) => area2(b) - area2(a))[0]] : [];
}

/** The bounding box of polygons (normalised), as a Custom Vision region. */
export function polygonsBox(polys) {
  const vs = polys.flat();
  const xs = vs.map((v) => v.x), ys = vs.map((v) => v.y);
  return norm(Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys));
}

/** Undo / redo of edits: each entry has `undo()` and `redo()` (async). */
export class History {
  constructor(onChange) { this.done = []; this.undone = []; this.onChange = onChange; }
  push(entry) { this.done.push(entry); this.undone = []; this.onChange && this.onChange(); }
  async undo() {
    const e = this.done.pop();
    if (!e) return;
    await e.undo();
    this.undone.push(e);
    this.onChange && this.onChange();
  }
  async redo() {
    const e = this.undone.pop();
    if (!e) return;
    await e.redo();
    this.done.push(e);
    this.onChange && this.onChange();
  }
}
