// Train and Performance: the Train dialog (Quick or Advanced with a budget, the tags to train), a live progress
// bar from the iteration's progress, the iterations (rename, delete, publish / unpublish with the prediction
// URL and, on request, the Prediction-Key), precision / recall / AP per tag and overall under live probability
// and overlap threshold sliders, a precision–recall curve per tag (the API's figures over a sweep of
// thresholds), a confusion matrix for classifiers, the performance images per tag, and exports.

import * as api from '../api.js';
import { h, mount, fail, toast, empty, field, confirmDialog, formDialog, progressBar, pct, when } from '../ui.js';
import { wrongPrediction } from './images.js';

const SVG = 'http://www.w3.org/2000/svg';
const svg = (tag, attrs = {}, ...kids) => {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const k of kids.flat(Infinity)) el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return el;
};

/** Thresholds the precision–recall curve is sampled at. */
const SWEEP = [0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98];

export async function render(main, ctx) {
  const { projectId } = ctx;
  const domains = await api.domains();
  const domain = domains.find((d) => d.id === ctx.project.settings.domainId) || {};
  const isDetection = domain.type === 'ObjectDetection';
  let iterations = [];
  let selectedId = null;
  let poll = null;
  let sliderTimer = null;
  const list = h('aside.sidebar.iterations');
  const detail = h('section.content');
  const trainButton = h('button.primary', { onclick: () => openTrain() }, '⚙ Train');
  mount(main, h('div.pagehead', h('h1', 'Performance'), trainButton), h('div.layout', list, detail));

  async function load(selectLatest = false) {
    iterations = await api.iterations(projectId);
    iterations.sort((a, b) => (b.created || '').localeCompare(a.created || ''));
    if (selectLatest || !iterations.some((i) => i.id === selectedId)) selectedId = iterations[0] ? iterations[0].id : null;
    renderList();
    await renderDetail();
    const training = iterations.find((i) => i.status === 'Training');
    trainButton.disabled = !!training;
    if (training && !poll) poll = setInterval(() => tick(training.id), 1000);
  }

  async function tick(id) {
    try {
      const it = await api.iteration(projectId, id);
      const idx = iterations.findIndex((i) => i.id === id);
      if (idx >= 0) iterations[idx] = it;
      const bar = main.querySelector(`[data-training="${id}"]`);
      if (bar) bar.set(it.trainingProgress || 0, 100, `${Math.round(it.trainingProgress || 0)} % · ${it.trainingMessage || 'training'}`);
      if (it.status !== 'Training') {
        clearInterval(poll);
        poll = null;
        if (bar && it.status === 'Completed') {
          bar.set(100, 100, '100 % · completed');
          await new Promise((r) => setTimeout(r, 800));
        }
        toast(it.status === 'Completed' ? `${it.name} is trained.` : `${it.name} failed: ${it.trainingMessage || ''}`, it.status === 'Completed' ? 'ok' : 'error');
        await load();
      }
    } catch (err) { fail(err); clearInterval(poll); poll = null; }
  }

  function renderList() {
    if (!iterations.length) {
      mount(list, h('p.muted', 'No iterations yet.'));
      return;
    }
    mount(list, h('h3', 'Iterations'), h('ul.iterlist', iterations.map((it) => h('li',
      h('button.iter', { 'aria-pressed': it.id === selectedId ? 'true' : 'false', dataset: { iterationId: it.id },
        onclick: () => { selectedId = it.id; renderList(); renderDetail(); } },
      h('strong', it.name), h('small', `${it.status}${it.publishName ? ' · published' : ''}`),
      h('small.muted', `${it.trainingType || 'Regular'} · ${when(it.trainedAt || it.created)}`))))));
  }

  async function renderDetail() {
    const it = iterations.find((i) => i.id === selectedId);
    if (!it) {
      mount(detail, empty('Nothing trained yet', 'Tag at least two tags with 5 images each (15 regions per tag for detection), then Train.',
        h('button.primary', { onclick: () => openTrain() }, 'Train')));
      return;
    }
    const head = h('div.pagehead.sub', h('h2', it.name),
      h('div.row',
        h('button', { onclick: () => rename(it) }, 'Rename'),
        it.status === 'Completed' ? (it.publishName
          ? h('button', { onclick: () => doUnpublish(it) }, 'Unpublish')
          : h('button.primary', { onclick: () => openPublish(it) }, 'Publish')) : null,
        h('button.danger', { onclick: () => doDelete(it) }, 'Delete')));
    if (it.status === 'Training') {
      const bar = progressBar();
      bar.dataset.training = it.id;
      bar.set(it.trainingProgress || 0, 100, `${Math.round(it.trainingProgress || 0)} % · ${it.trainingMessage || 'queued'}`);
      mount(detail, head, h('section.panel', h('h3', 'Training'), bar, h('p.muted', 'Training runs on a worker; you can leave this page.')));
      return;
    }
    if (it.status !== 'Completed') {
      mount(detail, head, h('div.callout.error', h('strong', `Training ${it.status.toLowerCase()}. `), it.trainingMessage || ''));
      return;
    }
    const probability = h('input', { type: 'range', min: 0, max: 100, value: 50, id: 'probability-threshold', 'aria-label': 'Probability threshold' });
    const overlap = h('input', { type: 'range', min: 0, max: 100, value: 30, id: 'overlap-threshold', 'aria-label': 'Overlap threshold' });
    const pOut = h('output', '50 %');
    const oOut = h('output', '30 %');
    const metrics = h('div.metrics');
    const perTag = h('div.pertag');
    const curves = h('div.curves');
    const confusion = h('div.confusion');
    const gallery = h('div.perfimages');
    const exportsBox = h('section.panel.exports');
    const published = it.publishName ? publishedPanel(it) : null;
    mount(detail, head, published,
      h('section.panel', h('div.sliders',
        field('Probability threshold', h('div.row', probability, pOut)),
        isDetection ? field('Overlap threshold', h('div.row', overlap, oOut)) : null),
      metrics, perTag),
      h('section.panel', h('h3', 'Precision–recall curves'), curves),
      isDetection ? null : h('section.panel', h('h3', 'Confusion matrix'), h('p.muted.small', 'Held-out images: actual tag (rows) against the most probable predicted tag (columns).'), confusion),
      h('section.panel', h('h3', 'Performance images'), gallery),
      exportsBox);
    const update = async () => {
      const t = probability.value / 100, o = overlap.value / 100;
      pOut.textContent = `${probability.value} %`;
      oOut.textContent = `${overlap.value} %`;
      try {
        const perf = await api.performance(projectId, it.id, t, isDetection ? o : undefined);
        renderMetrics(metrics, perTag, perf, isDetection);
        metrics.dataset.threshold = String(t);
      } catch (err) { fail(err); }
    };
    const debounced = () => { clearTimeout(sliderTimer); sliderTimer = setTimeout(update, 120); };
    probability.addEventListener('input', debounced);
    overlap.addEventListener('input', debounced);
    await update();
    renderCurves(curves, it, overlap).catch(fail);
    loadPerformanceImages(it, gallery, confusion).catch(fail);
    renderExports(exportsBox, it).catch(fail);
  }

  async function renderCurves(box, it, overlap) {
    mount(box, h('p.muted', 'Measuring…'));
    const o = isDetection ? overlap.value / 100 : undefined;
    const points = await Promise.all(SWEEP.map(async (t) => ({ t, perf: await api.performance(projectId, it.id, t, o) })));
    const tagsSeen = points[0].perf.perTagPerformance;
    mount(box, h('div.curvegrid', tagsSeen.map((tag) => {
      const pts = points.map(({ t, perf }) => {
        const p = perf.perTagPerformance.find((x) => x.id === tag.id) || { precision: 0, recall: 0 };
        return { t, precision: p.precision, recall: p.recall };
      });
      return prCurve(tag.name, pts, tag.averagePrecision);
    })));
  }

  async function loadPerformanceImages(it, box, confusion) {
    const tags = await api.tags(projectId, it.id);
    const all = [];
    for (let skip = 0; ; skip += 256) {
      const page = await api.performanceImages(projectId, it.id, { take: 256, skip });
      all.push(...page);
      if (page.length < 256) break;
    }
    if (!isDetection) renderConfusion(confusion, tags, all);
    const select = h('select', { 'aria-label': 'Tag of the performance images' }, h('option', { value: '' }, 'All tags'),
      tags.map((t) => h('option', { value: t.id }, t.name)));
    const grid = h('div.gallery');
    const show = () => {
      const shown = select.value ? all.filter((p) => (p.tags || []).some((t) => t.tagId === select.value) || (p.regions || []).some((r) => r.tagId === select.value)) : all;
      mount(grid, shown.length ? shown.slice(0, 120).map((p) => {
        const wrong = wrongPrediction(p, isDetection);
        const top = (p.predictions || []).slice().sort((a, b) => b.probability - a.probability)[0];
        return h(`div.tile${wrong ? '.wrong' : ''}`, h('img', { src: p.thumbnailUri, alt: '', loading: 'lazy' }),
          h('span.caption', top ? `${top.tagName} ${pct(top.probability)}` : 'no prediction'),
          wrong ? h('span.badge.wrong', 'wrong') : null);
      }) : h('p.muted', 'No held-out images for this tag.'));
    };
    select.addEventListener('change', show);
    mount(box, select, grid);
    show();
  }

  async function renderExports(box, it) {
    const platforms = it.exportableTo || [];
    if (!it.exportable || !platforms.length) {
      mount(box, h('h3', 'Export'), h('p.muted', 'Train on a compact domain to export this iteration.'));
      return;
    }
    const table = h('tbody');
    const refresh = async () => {
      const ex = await api.exports(projectId, it.id);
      mount(table, ex.length ? ex.map((e) => h('tr', h('td', e.platform), h('td', e.flavor || ''), h('td', e.status),
        h('td', e.downloadUri ? h('a', { href: e.downloadUri, download: '' }, 'Download') : '')))
        : h('tr', h('td', { colspan: 4 }, 'No exports yet.')));
      if (ex.some((e) => e.status === 'Exporting')) setTimeout(() => refresh().catch(fail), 1500);
    };
    mount(box, h('h3', 'Export'), h('div.row', platforms.map((p) => h('button', { onclick: async () => {
      try { await api.exportIteration(projectId, it.id, p); toast(`Exporting to ${p}…`); await refresh(); } catch (err) { fail(err); }
    } }, `Export ${p}`))), h('table', h('thead', h('tr', h('th', 'Platform'), h('th', 'Flavor'), h('th', 'Status'), h('th', ''))), table));
    await refresh();
  }

  function publishedPanel(it) {
    const kind = isDetection ? 'detect' : 'classify';
    const base = `${location.origin}/customvision/v3.0/Prediction/${projectId}/${kind}/iterations/${encodeURIComponent(it.publishName)}`;
    const key = h('code.key', '••••••••');
    return h('section.panel.published', h('h3', `Published as “${it.publishName}”`),
      h('p', 'Image file: ', h('code.url', `${base}/image`)),
      h('p', 'Image URL: ', h('code.url', `${base}/url`)),
      h('p', 'Prediction-Key: ', key, ' ', h('button.ghost', { onclick: async (e) => {
        try { key.textContent = (await api.session.keys()).predictionKey; e.target.remove(); } catch (err) { fail(err); }
      } }, 'Show')));
  }

  function openTrain() {
    api.tags(projectId).then((tags) => {
      const type = h('select', { name: 'trainingType' }, h('option', { value: 'Regular' }, 'Quick training'), h('option', { value: 'Advanced' }, 'Advanced training'));
      const budget = h('input', { type: 'number', name: 'budget', min: 1, max: 96, value: 1 });
      const budgetField = field('Budget (hours; Argus stops when it converges)', budget);
      budgetField.hidden = true;
      type.addEventListener('change', () => { budgetField.hidden = type.value !== 'Advanced'; });
      const boxes = tags.map((t) => h('label.chip', h('input', { type: 'checkbox', name: 'tag', value: t.id, checked: true }), ` ${t.name} (${t.imageCount})`));
      formDialog('Train', [field('Training type', type), budgetField, field('Tags to train', h('div.chips', boxes))], 'Train', async (form) => {
        const f = new FormData(form);
        const chosen = f.getAll('tag');
        const it = await api.train(projectId, {
          trainingType: f.get('trainingType'), budget: f.get('budget'),
          selectedTags: chosen.length === tags.length ? undefined : chosen,
        });
        toast(`Training ${it.name}…`);
        selectedId = it.id;
        await load();
      });
    }).catch(fail);
  }

  function rename(it) {
    formDialog('Rename iteration', [field('Name', h('input', { name: 'name', value: it.name, required: true }))], 'Rename', async (form) => {
      await api.renameIteration(projectId, it.id, new FormData(form).get('name'));
      await load();
    });
  }

  function openPublish(it) {
    formDialog('Publish iteration', [
      field('Publish name', h('input', { name: 'publishName', value: it.name.replace(/\s+/g, ''), required: true, maxlength: 256 }), 'Part of the prediction URL.'),
      field('Prediction resource', h('input', { name: 'predictionId', value: 'argus', required: true }), 'Any name: Argus has one prediction resource.'),
    ], 'Publish', async (form) => {
      const f = new FormData(form);
      await api.publish(projectId, it.id, f.get('publishName'), f.get('predictionId'));
      toast(`Published as ${f.get('publishName')}.`, 'ok');
      await load();
    });
  }

  async function doUnpublish(it) {
    if (!(await confirmDialog('Unpublish', `Stop serving predictions from "${it.publishName}"?`, 'Unpublish'))) return;
    try { await api.unpublish(projectId, it.id); await load(); } catch (err) { fail(err); }
  }

  async function doDelete(it) {
    if (!(await confirmDialog('Delete iteration', `Delete ${it.name}? Its model and evaluation are removed.`))) return;
    try { await api.deleteIteration(projectId, it.id); await load(true); } catch (err) { fail(err); }
  }

  await load();
  return () => { clearInterval(poll); clearTimeout(sliderTimer); };
}

function renderMetrics(metrics, perTag, perf, isDetection) {
  mount(metrics,
    h('div.metric', h('span', 'Precision'), h('strong', { dataset: { metric: 'precision' } }, pct(perf.precision))),
    h('div.metric', h('span', 'Recall'), h('strong', { dataset: { metric: 'recall' } }, pct(perf.recall))),
    h('div.metric', h('span', isDetection ? 'mAP' : 'AP'), h('strong', { dataset: { metric: 'averagePrecision' } }, pct(perf.averagePrecision))));
  mount(perTag, h('table.pertag', h('thead', h('tr', h('th', 'Tag'), h('th', 'Precision'), h('th', 'Recall'), h('th', 'AP'))),
    h('tbody', perf.perTagPerformance.map((t) => h('tr', { dataset: { tagId: t.id } }, h('td', t.name),
      h('td', pct(t.precision), t.precisionStdDeviation ? h('small.muted', ` ±${(100 * t.precisionStdDeviation).toFixed(1)}`) : null),
      h('td', pct(t.recall), t.recallStdDeviation ? h('small.muted', ` ±${(100 * t.recallStdDeviation).toFixed(1)}`) : null),
      h('td', pct(t.averagePrecision)))))));
}

/** An SVG precision–recall curve from (threshold, precision, recall) samples. */
function prCurve(name, pts, ap) {
  const W = 220, H = 180, M = 28;
  const x = (r) => M + r * (W - M - 8), y = (p) => H - M - p * (H - M - 8);
  const sorted = pts.filter((p) => p.recall > 0 || p.precision > 0).sort((a, b) => a.recall - b.recall || b.precision - a.precision);
  const path = sorted.map((p, i) => `${i ? 'L' : 'M'}${x(p.recall).toFixed(1)},${y(p.precision).toFixed(1)}`).join(' ');
  return h('figure.curve', svg('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': `Precision–recall curve of ${name}` },
    svg('rect', { x: M, y: 8, width: W - M - 8, height: H - M - 8, class: 'plot' }),
    [0, 0.5, 1].map((v) => [svg('text', { x: x(v), y: H - M + 14, 'text-anchor': 'middle', class: 'axis' }, v),
      svg('text', { x: M - 4, y: y(v) + 4, 'text-anchor': 'end', class: 'axis' }, v)]),
    svg('text', { x: (W + M) / 2, y: H - 2, 'text-anchor': 'middle', class: 'axis' }, 'recall'),
    path ? svg('path', { d: path, class: 'line' }) : [],
    sorted.map((p) => svg('circle', { cx: x(p.recall), cy: y(p.precision), r: 2.5, class: 'dot' }, svg('title', {}, `threshold ${p.t}: P ${pct(p.precision)}, R ${pct(p.recall)}`)))),
  h('figcaption', `${name} · AP ${pct(ap)}`));
}

function renderConfusion(box, tags, perfImages) {
  const idx = new Map(tags.map((t, i) => [t.id, i]));
  const m = tags.map(() => tags.map(() => 0));
  for (const p of perfImages) {
    const top = (p.predictions || []).slice().sort((a, b) => b.probability - a.probability)[0];
    for (const t of p.tags || []) {
      if (top && idx.has(t.tagId) && idx.has(top.tagId)) m[idx.get(t.tagId)][idx.get(top.tagId)] += 1;
    }
  }
  const max = Math.max(1, ...m.flat());
  const table = h('table.confusion', h('thead', h('tr', h('th', 'actual \\ predicted'), tags.map((t) => h('th', t.name)))),
    h('tbody', tags.map((t, i) => h('tr', h('th', t.name), m[i].map((v, j) => {
      const td = h(`td${i === j ? '.diag' : ''}`, String(v));
      td.style.setProperty('--heat', (v / max).toFixed(3));
      return td;
    })))));
  mount(box, table);
}
