// Smart labeler: suggested tags (or regions) for the untagged images from a trained iteration, most uncertain
// first; classification suggestions are confirmed in bulk, detection suggestions one image at a time.

import * as api from '../api.js';
import { h, mount, fail, toast, empty, field, pct } from '../ui.js';

export async function render(main, ctx) {
  const { projectId } = ctx;
  const domains = await api.domains();
  const isDetection = domains.some((d) => d.id === ctx.project.settings.domainId && d.type === 'ObjectDetection');
  const iterations = (await api.iterations(projectId)).filter((i) => i.status === 'Completed');
  if (!iterations.length) {
    mount(main, h('h1', 'Smart labeler'), empty('No trained iteration', 'Train once; then the smart labeler suggests tags for the untagged images.'));
    return;
  }
  iterations.sort((a, b) => (b.created || '').localeCompare(a.created || ''));
  const iter = h('select', { 'aria-label': 'Iteration' }, iterations.map((i) => h('option', { value: i.id }, i.name)));
  const sort = h('select', { 'aria-label': 'Order' }, h('option', { value: 'UncertaintyDescending' }, 'Most uncertain first'),
    h('option', { value: 'UncertaintyAscending' }, 'Most certain first'));
  const threshold = h('input', { type: 'number', min: 0, max: 100, value: 50, 'aria-label': 'Threshold %' });
  const grid = h('div.predgrid');
  const actions = h('div.row');
  let results = [];

  async function load() {
    mount(grid, h('p.muted', 'Computing suggestions…'));
    try {
      const res = await api.suggestedImages(projectId, iter.value, { maxCount: 64, sortBy: sort.value, threshold: 0 });
      results = res.results || [];
      draw();
    } catch (err) { mount(grid, h('p.error', err.message)); fail(err); }
  }

  function above(r) {
    return (r.predictions || []).filter((p) => p.probability >= threshold.value / 100).sort((a, b) => b.probability - a.probability);
  }

  function draw() {
    if (!results.length) {
      mount(grid, empty('Nothing to suggest', 'There are no untagged images.'));
      mount(actions);
      return;
    }
    mount(grid, results.map((r) => {
      const preds = above(r);
      const check = isDetection ? null : h('input', { type: 'checkbox', checked: preds.length > 0, disabled: !preds.length, 'aria-label': 'Confirm this suggestion', dataset: { imageId: r.id } });
      return h('div.card.pred', { dataset: { imageId: r.id } },
        h('img.thumb', { src: r.thumbnailUri || r.resizedImageUri, alt: '', loading: 'lazy' }),
        h('div.body', h('small.muted', `uncertainty ${pct(r.predictionUncertainty)}`),
          h('ul.small', preds.slice(0, 4).map((p) => h('li', `${p.tagName} ${pct(p.probability)}`))),
          isDetection ? h('button.primary', { disabled: !preds.length, onclick: (e) => acceptRegions(r, preds, e.target) }, `Accept ${preds.length} box(es)`)
            : h('label.row', check, preds[0] ? ` ${preds[0].tagName}` : ' nothing above the threshold')));
    }));
    mount(actions, isDetection ? null : h('button.primary', { onclick: confirmSelected }, 'Confirm selected'));
  }

  async function confirmSelected() {
    const chosen = [...grid.querySelectorAll('input[type=checkbox]:checked')].map((c) => c.dataset.imageId);
    const byTag = new Map();
    for (const r of results.filter((x) => chosen.includes(x.id))) {
      const top = above(r)[0];
      if (top) byTag.set(top.tagId, [...(byTag.get(top.tagId) || []), r.id]);
    }
    try {
      for (const [tagId, ids] of byTag) await api.tagImages(projectId, ids, [tagId]);
      toast(`Tagged ${chosen.length} image(s).`, 'ok');
      await load();
    } catch (err) { fail(err); }
  }

  async function acceptRegions(r, preds, button) {
    try {
      await api.createRegions(projectId, preds.filter((p) => p.boundingBox).map((p) => ({ imageId: r.id, tagId: p.tagId, ...p.boundingBox })));
      button.closest('.card').classList.add('promoted');
      button.disabled = true;
      toast('Regions added.', 'ok');
    } catch (err) { fail(err); }
  }

  for (const c of [iter, sort]) c.addEventListener('change', load);
  threshold.addEventListener('change', draw);
  mount(main, h('div.pagehead', h('h1', 'Smart labeler'), actions),
    h('section.panel', h('div.row.wrap', field('Iteration', iter), field('Order', sort), field('Threshold %', threshold))), grid);
  await load();
}
