// Labelling one image at full size, with next / previous (← →) through the gallery's order.
// Classification: tags toggled with the number keys. Detection: boxes drawn, moved and resized with the mouse,
// the tag picked with the number keys (it also retags the selected box), Delete, undo / redo (Ctrl+Z /
// Ctrl+Shift+Z), zoom and pan, region proposals as dashed boxes to accept with a click, and click-to-segment
// (S: left click = object, right click = background, drag = box prompt; Enter accepts the polygon's box as a
// region). Every edit is saved through the Training API at once.

import * as api from '../api.js';
import { h, mount, fail, toast } from '../ui.js';
import { Labeller, History, tagColour, polygonsBox, objectPolygons } from '../labeller.js';
import { galleryOrder } from './images.js';

export async function render(main, ctx) {
  const { projectId, arg: imageId, navigate } = ctx;
  const domains = await api.domains();
  const isDetection = domains.some((d) => d.id === ctx.project.settings.domainId && d.type === 'ObjectDetection');
  const multilabel = ctx.project.settings.classificationType === 'Multilabel';
  let [image] = await api.imagesByIds(projectId, [imageId]);
  if (!image) {
    mount(main, h('div.empty', h('h3', 'This image no longer exists'), h('a.button', { href: `#/projects/${projectId}/images` }, 'Back to images')));
    return;
  }
  let tags = await api.tags(projectId);
  const tagIndex = (id) => tags.findIndex((t) => t.id === id);
  const tagName = (id) => (tags.find((t) => t.id === id) || { name: '?' }).name;
  let currentTag = tags[0] ? tags[0].id : null;
  const ids = galleryOrder.projectId === projectId ? galleryOrder.ids : [];
  const pos = ids.indexOf(imageId);
  const go = (d) => {
    const next = ids[pos + d];
    if (next) navigate(`#/projects/${projectId}/label/${next}`);
  };
  const status = h('span.muted.status', { 'aria-live': 'polite' });
  const side = h('aside.labelside');
  const stage = h('div.stage');
  const header = h('div.pagehead',
    h('div.row', h('a.button.ghost', { href: `#/projects/${projectId}/images` }, '← Images'),
      h('h1', isDetection ? 'Label objects' : 'Tag image'),
      h('span.muted', pos >= 0 ? `${pos + 1} of ${ids.length}` : '')),
    h('div.row', status,
      h('button', { onclick: () => go(-1), disabled: pos <= 0, title: 'Previous (←)' }, '‹ Previous'),
      h('button', { onclick: () => go(1), disabled: pos < 0 || pos >= ids.length - 1, title: 'Next (→)' }, 'Next ›')));
  mount(main, header, h('div.labellayout', stage, side));

  const busy = async (what, fn) => {
    status.textContent = `${what}…`;
    try {
      const r = await fn();
      status.textContent = 'Saved';
      return r;
    } catch (err) {
      status.textContent = '';
      fail(err);
      throw err;
    }
  };

  const newTagForm = (onAdded) => {
    const input = h('input', { placeholder: 'New tag', 'aria-label': 'New tag name' });
    return h('form.row', { onsubmit: async (e) => {
      e.preventDefault();
      if (!input.value.trim()) return;
      try {
        const t = await api.createTag(projectId, input.value.trim());
        tags = await api.tags(projectId);
        currentTag = t.id;
        onAdded();
      } catch (err) { fail(err); }
    } }, input, h('button', { type: 'submit' }, 'Add'));
  };

  // ---------------- classification
  if (!isDetection) {
    const img = h('img.full', { src: image.originalImageUri || image.resizedImageUri, alt: 'Image being tagged' });
    mount(stage, img);
    const has = (id) => image.tags.some((t) => t.tagId === id);
    const toggle = async (tagId) => {
      await busy('Saving', async () => {
        if (has(tagId)) {
          await api.untagImages(projectId, [image.id], [tagId]);
        } else {
          if (!multilabel && image.tags.length) await api.untagImages(projectId, [image.id], image.tags.map((t) => t.tagId));
          await api.tagImages(projectId, [image.id], [tagId]);
        }
        [image] = await api.imagesByIds(projectId, [image.id]);
      });
      renderTagSide();
    };
    const renderTagSide = () => mount(side,
      h('h3', multilabel ? 'Tags (several allowed)' : 'Tag (one per image)'),
      h('ul.tagkeys', tags.map((t, i) => h('li', h('button.tagkey', {
        'aria-pressed': has(t.id) ? 'true' : 'false', dataset: { tagId: t.id }, onclick: () => toggle(t.id).catch(() => {}),
      }, i < 9 ? h('kbd', String(i + 1)) : null, ` ${t.name}`)))),
      newTagForm(() => renderTagSide()),
      h('p.muted.small', 'Number keys toggle tags; ← → move between images.'));
    renderTagSide();
    const onKey = (e) => {
      if (e.target.closest('input, textarea, select')) return;
      if (e.key === 'ArrowRight') go(1);
      else if (e.key === 'ArrowLeft') go(-1);
      else if (/^[1-9]$/.test(e.key) && tags[+e.key - 1]) toggle(tags[+e.key - 1].id).catch(() => {});
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }

  // ---------------- detection
  // Encode the image for Segment Anything now, so that the first click does not wait for the encoder.
  api.prepareSegment(projectId, image.id).catch(() => { /* best effort: a prompt encodes it anyway */ });
  const picture = new Image();
  picture.src = image.originalImageUri || image.resizedImageUri;
  await picture.decode();
  const canvas = h('canvas.labelcanvas', { tabindex: 0, 'aria-label': 'Image with its regions; drag to draw a box' });
  const toolbar = h('div.tools');
  mount(stage, toolbar, h('div.canvasbox', canvas));
  const toBox = (r) => ({ id: r.regionId || r.id, tagId: r.tagId, left: r.left, top: r.top, width: r.width, height: r.height, polygon: r.polygon });
  /** The outline moved and scaled with its box. */
  const fitPolygon = (polygon, from, to) => polygon && polygon.map((ring) => ring.map((v) => ({
    x: Math.min(1, Math.max(0, to.left + ((v.x - from.left) * to.width) / from.width)),
    y: Math.min(1, Math.max(0, to.top + ((v.y - from.top) * to.height) / from.height)),
  })));
  let boxes = image.regions.map(toBox);
  const history = new History(() => renderTools());
  let segmentAbort = null;
  let segmentPolygons = [];

  const serverAdd = async (b) => {
    const entry = { imageId: image.id, tagId: b.tagId, left: b.left, top: b.top, width: b.width, height: b.height };
    if (b.polygon) entry.polygon = b.polygon;
    const res = await api.createRegions(projectId, [entry]);
    const created = (res.created || [])[0];
    if (!created) throw new Error(res.duplicated && res.duplicated.length ? 'That region already exists.' : 'The region was not created (limit reached?).');
    return created.regionId;
  };
  const serverDelete = (id) => api.deleteRegions(projectId, [id]);
  // Edits reach the server one at a time, in the order they were made: two quick Ctrl+Z, or an undo while a
  // move is still saving, must not interleave. `data-pending` on the canvas counts the edits still going.
  let queue = Promise.resolve();
  let pending = 0;
  const setPending = (d) => { pending += d; canvas.dataset.pending = String(pending); };
  setPending(0);
  const serial = (fn) => (...args) => {
    setPending(1);
    const done = queue.then(() => fn(...args));
    queue = done.catch(() => {}).finally(() => setPending(-1));
    return done;
  };
  const refresh = () => { labeller.setBoxes(boxes); renderSide(); };

  /** A region whose server id changes when it is re-created (undo of a delete, a move). */
  const addBox = serial(async (b, record = true) => {
    const ref = { ...b };
    ref.id = await busy('Saving', () => serverAdd(ref));
    boxes.push(ref);
    labeller.select(ref.id);
    refresh();
    if (record) {
      history.push({
        undo: async () => { await serverDelete(ref.id); boxes = boxes.filter((x) => x !== ref); refresh(); },
        redo: async () => { ref.id = await serverAdd(ref); boxes.push(ref); refresh(); },
      });
    }
    return ref;
  });
  const deleteBox = serial(async (ref) => {
    await busy('Deleting', () => serverDelete(ref.id));
    boxes = boxes.filter((x) => x !== ref);
    refresh();
    history.push({
      undo: async () => { ref.id = await serverAdd(ref); boxes.push(ref); refresh(); },
      redo: async () => { await serverDelete(ref.id); boxes = boxes.filter((x) => x !== ref); refresh(); },
    });
  });
  /** Moves, resizes or retags a region: the API has no update, so it is deleted and created again. */
  const changeBox = serial(async (ref, after, before) => {
    const apply = async (state) => {
      const old = ref.id;
      // A move or resize carries the outline along: from the other end of this change to `state`. (The canvas
      // has already moved the box itself when a drag ends, so `ref` cannot tell where it came from.)
      if (ref.polygon && 'width' in state) ref.polygon = fitPolygon(ref.polygon, state === after ? before : after, state);
      Object.assign(ref, state);
      ref.id = await serverAdd(ref);
      await serverDelete(old);
      labeller.select(ref.id);
      refresh();
    };
    try {
      await busy('Saving', () => apply(after));
    } catch {
      Object.assign(ref, before);
      refresh();
      return;
    }
    history.push({ undo: () => apply(before), redo: () => apply(after) });
  });
  const undo = serial(() => history.undo());
  const redo = serial(() => history.redo());

  const labeller = new Labeller(canvas, {
    image: picture,
    colourOf: (id) => tagColour(tagIndex(id)),
    labelOf: (id) => tagName(id),
    onDraw: (b) => {
      if (!currentTag) { toast('Create a tag first (on the right).', 'error'); return; }
      addBox({ ...b, tagId: currentTag }).catch(() => refresh());
    },
    onChange: (id, after, before) => {
      const ref = boxes.find((x) => x.id === id);
      if (ref) changeBox(ref, { ...after }, { left: before.left, top: before.top, width: before.width, height: before.height });
    },
    onSelect: () => renderSide(),
    onProposal: (p) => {
      if (!currentTag) { toast('Create a tag first (on the right).', 'error'); return; }
      labeller.setProposals(labeller.proposals.filter((q) => q !== p));
      addBox({ left: p.left, top: p.top, width: p.width, height: p.height, tagId: currentTag }).catch(() => refresh());
    },
    onPrompt: (prompt) => runSegment(prompt),
  });
  // The open labeller is reachable from the page (the browser tests map image coordinates to the screen through
  // it, and it helps when debugging in the console); it holds nothing the API does not already give.
  window.argusLabeller = labeller;

  async function runSegment(prompt) {
    if (segmentAbort) segmentAbort.abort();
    const abort = new AbortController();
    segmentAbort = abort;
    status.textContent = 'Segmenting…';
    canvas.dataset.segment = 'running';
    try {
      const job = await api.segmentAndWait(projectId, image.id, prompt, abort.signal);
      if (abort.signal.aborted) return;
      const seg = ((job.items || [])[0] || {}).segments || [];
      segmentPolygons = seg.length ? seg[0].polygons.map((p) => p.vertices) : [];
      labeller.setPolygons(segmentPolygons);
      status.textContent = segmentPolygons.length ? 'Enter accepts the segment as a region' : 'No object found there';
      canvas.dataset.segment = segmentPolygons.length ? 'ready' : 'empty';
    } catch (err) {
      if (err.name !== 'AbortError') { fail(err); canvas.dataset.segment = 'failed'; status.textContent = ''; }
    }
    renderTools();
  }

  async function acceptSegment() {
    if (!segmentPolygons.length) return;
    if (!currentTag) { toast('Create a tag first (on the right).', 'error'); return; }
    const parts = objectPolygons(segmentPolygons, labeller.points, labeller.promptBox);
    const box = polygonsBox(parts);
    const polygon = parts.slice(0, 32).map((ring) => ring.slice(0, 1000).map((v) => ({ x: v.x, y: v.y })));
    segmentPolygons = [];
    labeller.clearPrompt();
    canvas.dataset.segment = '';
    await addBox({ ...box, tagId: currentTag, polygon }).catch(() => {});
    renderTools();
  }

  async function loadProposals() {
    try {
      const res = await busy('Finding proposals', () => api.proposals(projectId, image.id));
      const props = (res.proposals || []).map((p) => ({ ...p.boundingBox, confidence: p.confidence }));
      labeller.setProposals(props);
      status.textContent = props.length ? `${props.length} proposals: click one to accept it` : 'No proposals';
      canvas.dataset.proposals = String(props.length);
    } catch { /* shown by busy */ }
  }

  const setMode = (m) => { labeller.setMode(m); if (m !== 'segment') { labeller.clearPrompt(); segmentPolygons = []; } renderTools(); };
  function renderTools() {
    const m = labeller.mode;
    mount(toolbar,
      h('button', { 'aria-pressed': m === 'box' ? 'true' : 'false', onclick: () => setMode('box'), title: 'Draw and edit boxes (B)' }, '▭ Box'),
      h('button', { 'aria-pressed': m === 'segment' ? 'true' : 'false', onclick: () => setMode('segment'), title: 'Click to segment (S)' }, '✦ Segment'),
      h('button', { onclick: loadProposals, title: 'Region proposals (P)' }, 'Proposals'),
      m === 'segment' ? [
        h('button.primary', { onclick: acceptSegment, disabled: !segmentPolygons.length, title: 'Accept (Enter)' }, 'Accept segment'),
        h('button', { onclick: () => { labeller.clearPrompt(); segmentPolygons = []; renderTools(); }, title: 'Clear prompt (Esc)' }, 'Clear'),
      ] : null,
      h('span.spacer'),
      h('button', { onclick: () => undo().catch(fail), disabled: !history.done.length, title: 'Undo (Ctrl+Z)' }, '↶ Undo'),
      h('button', { onclick: () => redo().catch(fail), disabled: !history.undone.length, title: 'Redo (Ctrl+Shift+Z)' }, '↷ Redo'),
      h('button', { onclick: () => labeller.zoom(1.25), title: 'Zoom in' }, '+'),
      h('button', { onclick: () => labeller.zoom(0.8), title: 'Zoom out' }, '−'),
      h('button', { onclick: () => labeller.fit(), title: 'Fit (0)' }, 'Fit'));
  }

  function renderSide() {
    const sel = boxes.find((b) => b.id === labeller.selected);
    mount(side,
      h('h3', 'Tag for new boxes'),
      h('ul.tagkeys', tags.map((t, i) => h('li', h('button.tagkey', {
        'aria-pressed': t.id === currentTag ? 'true' : 'false', dataset: { tagId: t.id },
        onclick: () => pickTag(t.id),
      }, h('span.swatch', { dataset: { colour: i } }), i < 9 ? h('kbd', String(i + 1)) : null, ` ${t.name}`)))),
      newTagForm(() => renderSide()),
      h('h3', `Regions (${boxes.length})`),
      h('ul.regions', boxes.map((b) => h('li', { 'aria-selected': b === sel ? 'true' : 'false' },
        h('button.link', { onclick: () => labeller.select(b.id) }, tagName(b.tagId)),
        h('small.muted', ` ${(b.width * 100).toFixed(0)}×${(b.height * 100).toFixed(0)} %`),
        h('button.icon', { 'aria-label': `Delete region ${tagName(b.tagId)}`, onclick: () => deleteBox(b).catch(() => {}) }, '×')))),
      h('details.help', h('summary', 'Keys'), h('ul.small',
        h('li', 'Drag: draw a box · drag a box or a corner: move, resize'),
        h('li', '1–9: tag (retags the selected box) · Delete: remove the selected box'),
        h('li', 'S: segment (click object, right-click background, drag a box) · Enter: accept'),
        h('li', 'P: proposals · Ctrl+Z / Ctrl+Shift+Z: undo / redo'),
        h('li', 'Wheel: zoom · Space+drag or middle button: pan · 0: fit · ← →: images'))));
    for (const s of side.querySelectorAll('.swatch')) s.style.background = tagColour(+s.dataset.colour);
  }

  function pickTag(id) {
    currentTag = id;
    const sel = boxes.find((b) => b.id === labeller.selected);
    if (sel && sel.tagId !== id) {
      const before = { tagId: sel.tagId }, after = { tagId: id };
      changeBox(sel, after, before);
    }
    renderSide();
  }

  const onKey = (e) => {
    if (e.target.closest('input, textarea, select')) return;
    const ctrl = e.ctrlKey || e.metaKey;
    if (ctrl && e.key.toLowerCase() === 'z') { e.preventDefault(); (e.shiftKey ? redo() : undo()).catch(fail); return; }
    if (ctrl && e.key.toLowerCase() === 'y') { e.preventDefault(); redo().catch(fail); return; }
    if (ctrl) return;
    const sel = boxes.find((b) => b.id === labeller.selected);
    if ((e.key === 'Delete' || e.key === 'Backspace') && sel) { e.preventDefault(); deleteBox(sel).catch(() => {}); }
    else if (/^[1-9]$/.test(e.key) && tags[+e.key - 1]) pickTag(tags[+e.key - 1].id);
    else if (e.key === 'ArrowRight') go(1);
    else if (e.key === 'ArrowLeft') go(-1);
    else if (e.key === 's' || e.key === 'S') setMode('segment');
    else if (e.key === 'b' || e.key === 'B') setMode('box');
    else if (e.key === 'p' || e.key === 'P') loadProposals();
    else if (e.key === '0') labeller.fit();
    else if (e.key === 'Enter' && labeller.mode === 'segment') acceptSegment();
    else if (e.key === 'Escape') { labeller.clearPrompt(); segmentPolygons = []; labeller.select(null); renderTools(); }
  };
  window.addEventListener('keydown', onKey);
  renderTools();
  refresh();
  return () => {
    window.removeEventListener('keydown', onKey);
    if (segmentAbort) segmentAbort.abort();
    labeller.destroy();
    if (window.argusLabeller === labeller) delete window.argusLabeller;
  };
}
