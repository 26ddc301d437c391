// Quick test: send an image (a file or a URL) to a trained iteration; the image comes back with its boxes
// drawn (detection) and a table of tags and probabilities, filtered by a threshold slider. The result is
// stored like Custom Vision's, so it appears under Predictions.

import * as api from '../api.js';
import { h, mount, fail, empty, field, pct } from '../ui.js';
import { tagColour } from '../labeller.js';

export async function render(main, ctx) {
  const { projectId } = ctx;
  const iterations = (await api.iterations(projectId)).filter((i) => i.status === 'Completed');
  if (!iterations.length) {
    mount(main, h('h1', 'Quick test'), empty('Nothing to test yet', 'Train an iteration first.',
      h('a.button.primary', { href: `#/projects/${projectId}/performance` }, 'Go to Performance')));
    return;
  }
  iterations.sort((a, b) => (b.created || '').localeCompare(a.created || ''));
  const iterSelect = h('select', { 'aria-label': 'Iteration' }, iterations.map((i) => h('option', { value: i.id }, `${i.name}${i.publishName ? ' (published)' : ''}`)));
  const file = h('input', { type: 'file', accept: 'image/*', id: 'quicktest-file', 'aria-label': 'Image file to test' });
  const url = h('input', { type: 'url', placeholder: 'https://…/photo.jpg', 'aria-label': 'Image URL to test' });
  const threshold = h('input', { type: 'range', min: 0, max: 100, value: 15, id: 'quicktest-threshold', 'aria-label': 'Threshold' });
  const thOut = h('output', '15 %');
  const canvas = h('canvas.quickcanvas');
  const table = h('div.results');
  let result = null;
  let picture = null;

  const draw = () => {
    if (!result || !picture) return;
    const t = threshold.value / 100;
    thOut.textContent = `${threshold.value} %`;
    const shown = result.predictions.filter((p) => p.probability >= t);
    const maxW = Math.min(760, canvas.parentElement.clientWidth || 760);
    const s = Math.min(1, maxW / picture.naturalWidth);
    canvas.width = Math.round(picture.naturalWidth * s);
    canvas.height = Math.round(picture.naturalHeight * s);
    const c = canvas.getContext('2d');
    c.drawImage(picture, 0, 0, canvas.width, canvas.height);
    const tagIds = [...new Set(result.predictions.map((p) => p.tagId))];
    for (const p of shown.filter((q) => q.boundingBox)) {
      const b = p.boundingBox, col = tagColour(tagIds.indexOf(p.tagId));
      c.strokeStyle = col;
      c.lineWidth = 2;
      c.strokeRect(b.left * canvas.width, b.top * canvas.height, b.width * canvas.width, b.height * canvas.height);
      c.fillStyle = col;
      c.font = '12px sans-serif';
      const label = `${p.tagName} ${pct(p.probability)}`;
      c.fillRect(b.left * canvas.width, b.top * canvas.height - 16, c.measureText(label).width + 8, 16);
      c.fillStyle = '#fff';
      c.fillText(label, b.left * canvas.width + 4, b.top * canvas.height - 4);
    }
    mount(table, h('table.predictions', h('thead', h('tr', h('th', 'Tag'), h('th', 'Probability'))),
      h('tbody', shown.length ? shown.map((p) => h('tr', h('td', p.tagName), h('td', pct(p.probability))))
        : h('tr', h('td', { colspan: 2 }, 'Nothing above the threshold.')))));
    table.dataset.rows = String(shown.length);
  };

  const run = async (fn) => {
    mount(table, h('p.muted', 'Predicting…'));
    try {
      result = await fn();
      result.predictions.sort((a, b) => b.probability - a.probability);
      draw();
    } catch (err) { mount(table, h('p.error', err.message)); fail(err); }
  };
  file.addEventListener('change', () => {
    const f = file.files[0];
    if (!f) return;
    picture = new Image();
    picture.src = URL.createObjectURL(f);
    picture.decode().then(() => run(() => api.quickTestFile(projectId, f, iterSelect.value))).catch(fail);
  });
  const byUrl = async () => {
    if (!url.value) return;
    await run(async () => {
      const r = await api.quickTestUrl(projectId, url.value, iterSelect.value);
      const stored = await api.queryPredictions(projectId, { maxCount: 1, orderBy: 'Newest' }).catch(() => null);
      const hit = stored && stored.results && stored.results.find((x) => x.id === r.id);
      picture = new Image();
      picture.src = hit ? hit.originalImageUri || hit.resizedImageUri : '';
      if (hit) await picture.decode(); else picture = null;
      return r;
    });
    if (!picture) canvas.replaceChildren();
  };
  threshold.addEventListener('input', draw);
  mount(main, h('div.pagehead', h('h1', 'Quick test')),
    h('section.panel', h('div.row.wrap', field('Iteration', iterSelect), field('Image file', file),
      field('or image URL', h('div.row', url, h('button', { onclick: () => byUrl().catch(fail) }, 'Test URL'))),
      field('Threshold', h('div.row', threshold, thOut)))),
    h('div.quicklayout', h('div.quickimage', canvas), table));
}
