// Predictions: the images sent to the Prediction API or Quick test and stored, queried with the API's filters
// (iteration, a tag with a probability range) and orders (Newest, Oldest, Suggested), paged by the query's
// continuation token; each can be promoted to the training images with tags (or boxes) or deleted.

import * as api from '../api.js';
import { h, mount, fail, toast, empty, field, confirmDialog, formDialog, pct, when } from '../ui.js';

export async function render(main, ctx) {
  const { projectId } = ctx;
  const domains = await api.domains();
  const isDetection = domains.some((d) => d.id === ctx.project.settings.domainId && d.type === 'ObjectDetection');
  const [tags, iterations] = await Promise.all([api.tags(projectId), api.iterations(projectId)]);
  const order = h('select', { 'aria-label': 'Order' }, ['Newest', 'Oldest', 'Suggested'].map((o) => h('option', { value: o }, o === 'Suggested' ? 'Suggested first' : o)));
  const iter = h('select', { 'aria-label': 'Iteration' }, h('option', { value: '' }, 'All iterations'),
    iterations.map((i) => h('option', { value: i.id }, i.name)));
  const tag = h('select', { 'aria-label': 'Tag filter' }, h('option', { value: '' }, 'Any tag'), tags.map((t) => h('option', { value: t.id }, t.name)));
  const minP = h('input', { type: 'number', min: 0, max: 100, value: 0, 'aria-label': 'Minimum probability %' });
  const grid = h('div.predgrid');
  const more = h('div.more');
  let token = null;

  const query = () => {
    const q = { maxCount: 24, orderBy: order.value };
    if (iter.value) q.iterationId = iter.value;
    if (tag.value) q.tags = [{ id: tag.value, minThreshold: minP.value / 100, maxThreshold: 1 }];
    return q;
  };
  async function load(reset) {
    try {
      const q = reset || !token ? query() : { ...token };
      const res = await api.queryPredictions(projectId, q);
      if (reset) grid.replaceChildren();
      for (const p of res.results || []) grid.append(card(p));
      token = res.token && res.token.continuation ? res.token : null;
      if (!grid.children.length) grid.append(empty('No stored predictions', 'Predictions made through the Prediction API or Quick test appear here.'));
      mount(more, token ? h('button.ghost', { onclick: () => load(false) }, 'Load more') : '');
    } catch (err) { fail(err); }
  }

  function card(p) {
    const preds = (p.predictions || []).slice().sort((a, b) => b.probability - a.probability);
    const el = h('div.card.pred', { dataset: { predictionId: p.id } },
      h('img.thumb', { src: p.thumbnailUri || p.resizedImageUri, alt: '', loading: 'lazy' }),
      h('div.body',
        h('ul.small', preds.slice(0, 3).map((x) => h('li', `${x.tagName} ${pct(x.probability)}`))),
        h('small.muted', when(p.created)),
        h('div.row', h('button.primary', { onclick: () => promote(p, el) }, 'Add to training'),
          h('button.danger', { onclick: async () => {
            if (!(await confirmDialog('Delete prediction', 'Delete this stored prediction and its image?'))) return;
            try { await api.deletePredictions(projectId, [p.id]); el.remove(); } catch (err) { fail(err); }
          } }, 'Delete'))));
    return el;
  }

  function promote(p, el) {
    const preds = (p.predictions || []).slice().sort((a, b) => b.probability - a.probability);
    const threshold = h('input', { type: 'number', name: 'threshold', min: 1, max: 100, value: 50 });
    const fields = isDetection
      ? [field('Keep the predicted boxes with probability of at least (%)', threshold)]
      : [field('Tags', h('div.chips', tags.map((t) => h('label.chip', h('input', {
        type: 'checkbox', name: 'tag', value: t.id, checked: preds[0] && preds[0].tagId === t.id,
      }), ` ${t.name}`))))];
    formDialog('Add to training images', fields, 'Add', async (form) => {
      const f = new FormData(form);
      const entry = { id: p.id };
      if (isDetection) {
        const th = Number(f.get('threshold')) / 100;
        entry.regions = preds.filter((x) => x.boundingBox && x.probability >= th).map((x) => ({ tagId: x.tagId, ...x.boundingBox }));
      } else {
        entry.tagIds = f.getAll('tag');
      }
      const res = await api.promotePredictions(projectId, [entry]);
      const s = (res.images || [])[0];
      if (s && s.status !== 'OK' && s.status !== 'OKDuplicate') throw new Error(`Not added: ${s.status}`);
      toast('Added to the training images.', 'ok');
      el.classList.add('promoted');
    });
  }

  for (const c of [order, iter, tag, minP]) c.addEventListener('change', () => load(true));
  mount(main, h('div.pagehead', h('h1', 'Predictions')),
    h('section.panel', h('div.row.wrap', field('Order', order), field('Iteration', iter), field('Tag', tag), field('Min. probability %', minP))),
    grid, more);
  await load(true);
}
