// Training images: the gallery (All / Tagged / Untagged, tag filters with counts, an iteration selector that
// marks in red the images that iteration got wrong), paging by scrolling, multi-select with bulk tag / untag /
// delete, the tag list, and the upload panel (drag and drop, file picker or URLs; tags for the batch; batches
// of 64 with a progress bar and each image's outcome).

import * as api from '../api.js';
import { h, mount, fail, toast, empty, field, confirmDialog, progressBar } from '../ui.js';

/** Image ids of the gallery as last shown, in order: the labeller's next / previous. */
export const galleryOrder = { projectId: null, ids: [], filter: 'All', tagIds: [] };

const PAGE = 48;

/** True when the prediction of an evaluated image disagrees with its labels. */
export function wrongPrediction(perf, isDetection) {
  const preds = perf.predictions || [];
  if (!isDetection) {
    const top = preds.slice().sort((a, b) => b.probability - a.probability)[0];
    const tags = new Set((perf.tags || []).map((t) => t.tagId));
    return !top || !tags.has(top.tagId);
  }
  const iou = (a, b) => {
    const x0 = Math.max(a.left, b.left), y0 = Math.max(a.top, b.top);
    const x1 = Math.min(a.left + a.width, b.left + b.width), y1 = Math.min(a.top + a.height, b.top + b.height);
    const inter = Math.max(0, x1 - x0) * Math.max(0, y1 - y0);
    return inter / (a.width * a.height + b.width * b.height - inter || 1);
  };
  const confident = preds.filter((p) => p.probability >= 0.5 && p.boundingBox);
  const missed = (perf.regions || []).some((r) => !confident.some((p) => p.tagId === r.tagId && iou(p.boundingBox, r) >= 0.5));
  const spurious = confident.some((p) => !(perf.regions || []).some((r) => r.tagId === p.tagId && iou(p.boundingBox, r) >= 0.5));
  return missed || spurious;
}

export async function render(main, ctx) {
  const { projectId, navigate } = ctx;
  const isDetection = (await api.domains()).some((d) => d.id === ctx.project.settings.domainId && d.type === 'ObjectDetection');
  const state = {
    filter: galleryOrder.projectId === projectId ? galleryOrder.filter : 'All',
    tagIds: galleryOrder.projectId === projectId ? galleryOrder.tagIds : [],
    iterationId: '',
    wrong: new Map(),
    selected: new Set(),
    skip: 0,
    done: false,
    loading: false,
  };
  let tags = [];
  let iterations = [];
  let counts = ['…', '…', '…'];
  const sidebar = h('aside.sidebar');
  const toolbar = h('div.toolbar');
  const grid = h('div.gallery', { 'aria-label': 'Training images' });
  const more = h('div.more');
  const uploadPanel = h('section.panel.upload', { hidden: true });
  const header = h('div.pagehead', h('h1', 'Training images'),
    h('div.row', h('button.primary', { onclick: () => { uploadPanel.hidden = !uploadPanel.hidden; } }, '+ Add images')));
  mount(main, header, uploadPanel, h('div.layout', sidebar, h('section.content', toolbar, grid, more)));

  /** The tag list (the image counts stay those the last reset fetched). */
  async function loadTags() {
    tags = await api.tags(projectId);
    renderSidebar();
    renderUpload();
  }

  // The sidebar's parts are redrawn separately, so that typing a new tag's name survives a refresh of counts.
  const filtersBox = h('div');
  const tagsBox = h('div');
  const iterationBox = h('div');
  const newTag = h('input', { placeholder: 'New tag', 'aria-label': 'New tag name', maxlength: 200 });
  const newTagForm = h('form.row', { onsubmit: async (e) => {
    e.preventDefault();
    if (!newTag.value.trim()) return;
    try {
      await api.createTag(projectId, newTag.value.trim());
      newTag.value = '';
      await loadTags();
    } catch (err) { fail(err); }
  } }, newTag, h('button', { type: 'submit' }, 'Add'));
  mount(sidebar, h('h3', 'Show'), filtersBox, h('h3', 'Tags'), tagsBox, newTagForm, h('h3', 'Iteration'), iterationBox);

  function renderSidebar() {
    const [all, tagged, untagged] = counts;
    const filterButton = (key, label, n) => h('button.filter', {
      'aria-pressed': state.filter === key ? 'true' : 'false',
      onclick: () => { state.filter = key; if (key === 'Untagged') state.tagIds = []; reset(); },
    }, label, h('span.count', n));
    mount(filtersBox, filterButton('All', 'All', all), filterButton('Tagged', 'Tagged', tagged), filterButton('Untagged', 'Untagged', untagged));
    mount(tagsBox, tags.length ? h('ul.taglist', tags.map((t) => h('li',
      h('label', h('input', {
        type: 'checkbox', checked: state.tagIds.includes(t.id), dataset: { tagId: t.id },
        onchange: (e) => {
          state.tagIds = e.target.checked ? [...state.tagIds, t.id] : state.tagIds.filter((x) => x !== t.id);
          if (state.tagIds.length && state.filter === 'Untagged') state.filter = 'All';
          reset();
        },
      }), ` ${t.name}`), h('span.count', t.imageCount),
      h('button.icon', { title: `Delete tag ${t.name}`, 'aria-label': `Delete tag ${t.name}`, onclick: async () => {
        if (!(await confirmDialog('Delete tag', `Delete "${t.name}"? It is removed from every image.`))) return;
        try { await api.deleteTag(projectId, t.id); await loadTags(); reset(); } catch (err) { fail(err); }
      } }, '×'))))
      : h('p.muted', 'No tags yet.'));
    if (!iterationBox.firstChild) {
      mount(iterationBox,
        h('select', { 'aria-label': 'Iteration', onchange: async (e) => { state.iterationId = e.target.value; await loadWrong(); reset(); } },
          h('option', { value: '' }, 'Workspace'),
          iterations.filter((i) => i.status === 'Completed').map((i) => h('option', { value: i.id }, i.name))),
        h('p.muted.small.wronghint', { hidden: true }, 'Images marked red were predicted wrongly by this iteration.'));
    }
    iterationBox.querySelector('.wronghint').hidden = !state.iterationId;
  }

  async function loadWrong() {
    state.wrong = new Map();
    if (!state.iterationId) return;
    for (let skip = 0; ; skip += 256) {
      const page = await api.performanceImages(projectId, state.iterationId, { take: 256, skip });
      for (const p of page) state.wrong.set(p.id, wrongPrediction(p, isDetection));
      if (page.length < 256) break;
    }
  }

  function renderToolbar() {
    const n = state.selected.size;
    const tagPick = h('select', { 'aria-label': 'Tag to apply' }, tags.map((t) => h('option', { value: t.id }, t.name)));
    const ids = () => [...state.selected];
    const after = async (msg) => { toast(msg, 'ok'); state.selected.clear(); await loadTags(); reset(); };
    mount(toolbar,
      h('label.row', h('input', { type: 'checkbox', 'aria-label': 'Select all shown', checked: n > 0 && n === grid.children.length,
        onchange: (e) => { for (const c of grid.querySelectorAll('.tile')) select(c, e.target.checked); renderToolbar(); } }),
      n ? `${n} selected` : 'Select'),
      n ? [
        tagPick,
        h('button', { disabled: !tags.length, onclick: async () => {
          try { await api.tagImages(projectId, ids(), [tagPick.value]); await after(`Tagged ${n} image(s).`); } catch (err) { fail(err); }
        } }, 'Tag'),
        h('button', { disabled: !tags.length, onclick: async () => {
          try { await api.untagImages(projectId, ids(), [tagPick.value]); await after(`Untagged ${n} image(s).`); } catch (err) { fail(err); }
        } }, 'Untag'),
        h('button.danger', { onclick: async () => {
          if (!(await confirmDialog('Delete images', `Delete ${n} image(s) and their labels? This cannot be undone.`))) return;
          try { await api.deleteImages(projectId, ids()); await after(`Deleted ${n} image(s).`); } catch (err) { fail(err); }
        } }, 'Delete'),
      ] : null);
  }

  function select(tile, on) {
    const id = tile.dataset.imageId;
    if (on) state.selected.add(id); else state.selected.delete(id);
    tile.classList.toggle('selected', on);
    tile.querySelector('input').checked = on;
  }

  function tile(img) {
    const wrong = state.wrong.get(img.id);
    const labels = isDetection ? `${(img.regions || []).length} region(s)` : (img.tags || []).map((t) => t.tagName).join(', ') || 'Untagged';
    const check = h('input', { type: 'checkbox', 'aria-label': 'Select image', onclick: (e) => e.stopPropagation(),
      onchange: (e) => { select(el, e.target.checked); renderToolbar(); } });
    const el = h('div.tile', { dataset: { imageId: img.id }, tabindex: 0, role: 'button', 'aria-label': `Open image: ${labels}`,
      onclick: () => navigate(`#/projects/${projectId}/label/${img.id}`),
      onkeydown: (e) => { if (e.key === 'Enter') navigate(`#/projects/${projectId}/label/${img.id}`); } },
    h('img', { src: img.thumbnailUri, alt: '', loading: 'lazy' }), check,
    h('span.caption', labels), wrong ? h('span.badge.wrong', { title: 'This iteration predicted it wrongly' }, 'wrong') : null);
    if (wrong) el.classList.add('wrong');
    return el;
  }

  async function loadMore() {
    if (state.loading || state.done) return;
    state.loading = true;
    try {
      const page = await api.images(projectId, { filter: state.filter, tagIds: state.tagIds, take: PAGE, skip: state.skip, iterationId: state.iterationId });
      state.skip += page.length;
      state.done = page.length < PAGE;
      for (const img of page) { grid.append(tile(img)); galleryOrder.ids.push(img.id); }
      if (!grid.children.length) {
        grid.append(empty(state.filter === 'Untagged' ? 'No untagged images' : 'No images here',
          'Add images with the button above, or change the filters.'));
      }
      mount(more, state.done ? '' : h('button.ghost', { onclick: loadMore }, 'Load more'));
    } catch (err) { fail(err); } finally { state.loading = false; }
  }

  function reset() {
    Object.assign(galleryOrder, { projectId, ids: [], filter: state.filter, tagIds: state.tagIds });
    state.skip = 0; state.done = false; state.selected.clear();
    grid.replaceChildren();
    renderToolbar();
    Promise.all(['All', 'Tagged', 'Untagged'].map((filter) => api.imageCount(projectId, { filter })))
      .then((c) => { counts = c; renderSidebar(); })
      .catch(fail);
    loadMore();
  }

  // The upload panel is built once; only its tag chips follow the tag list (keeping what was ticked).
  const uploadTags = h('div.chips');
  const picker = h('input', { type: 'file', multiple: true, accept: 'image/*', id: 'upload-files', 'aria-label': 'Choose image files' });
  const urls = h('textarea', { rows: 2, placeholder: 'Or paste image URLs, one per line', 'aria-label': 'Image URLs' });
  const bar = progressBar();
  bar.hidden = true;
  const outcome = h('div.outcome');
  const zone = h('div.dropzone', { tabindex: 0 }, h('p', 'Drop photographs here, or '), picker);
  const chosen = () => [...uploadTags.querySelectorAll('input:checked')].map((i) => i.value);
  const summarize = (results) => {
    const by = {};
    for (const r of results) by[r.status] = (by[r.status] || 0) + 1;
    const bad = results.filter((r) => r.status !== 'OK');
    mount(outcome, h('p', Object.entries(by).map(([k, v]) => `${v} ${k}`).join(' · ')),
      bad.length ? h('table.small', h('thead', h('tr', h('th', 'Image'), h('th', 'Outcome'))),
        h('tbody', bad.slice(0, 200).map((r) => h('tr', h('td', r.name), h('td', describeStatus(r.status)))))) : null);
  };
  const run = async (items, fn) => {
    if (!items.length) return;
    bar.hidden = false;
    bar.set(0, items.length, `0 / ${items.length}`);
    const results = await fn(projectId, items, chosen(), (done, total, res) => { bar.set(done, total, `${done} / ${total}`); summarize(res); });
    summarize(results);
    toast(`Uploaded ${results.filter((r) => r.status === 'OK').length} of ${items.length} image(s).`, 'ok');
    await loadTags();
    reset();
  };
  picker.addEventListener('change', () => run([...picker.files], api.uploadFiles).catch(fail).finally(() => { picker.value = ''; }));
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    run([...e.dataTransfer.files].filter((f) => f.type.startsWith('image/') || /\.(jpe?g|png|bmp|gif|webp|tiff?)$/i.test(f.name)), api.uploadFiles).catch(fail);
  });
  mount(uploadPanel, h('h2', 'Add images'), field('Tags for this batch', uploadTags), zone,
    h('div.row', urls, h('button', { onclick: () => run(urls.value.split(/\s+/).filter(Boolean), api.uploadUrls).catch(fail) }, 'Add URLs')),
    bar, outcome);

  function renderUpload() {
    const ticked = new Set(chosen());
    mount(uploadTags, tags.length ? tags.map((t) => h('label.chip', h('input', { type: 'checkbox', value: t.id, checked: ticked.has(t.id) }), ` ${t.name}`))
      : h('span.muted', 'No tags yet: add them in the list on the left, or label after upload.'));
  }

  iterations = await api.iterations(projectId).catch(() => []);
  await loadTags();
  reset();
  // Infinite scroll: the next page loads when the end of the gallery comes into view ("Load more" stays as the
  // keyboard's way).
  const observer = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadMore();
  }, { rootMargin: '400px' });
  observer.observe(more);
  return () => observer.disconnect();
}

/** Words for an ImageCreateStatus. */
export function describeStatus(s) {
  return ({
    OK: 'added', OKDuplicate: 'already in the project', ErrorSource: 'could not be read from its source',
    ErrorImageFormat: 'not an image Argus can read', ErrorImageSize: 'too large (6 MB at most)',
    ErrorStorage: 'could not be stored', ErrorLimitExceed: 'the project is full', ErrorTagLimitExceed: 'too many tags',
    ErrorRegionLimitExceed: 'too many regions', ErrorUnknown: 'failed', ErrorNegativeAndRegularTagOnSameImage: 'negative and regular tags together',
    ErrorImageDimensions: 'too small or too large in pixels', ErrorInvalidTag: 'a tag does not exist',
  })[s] || s;
}
