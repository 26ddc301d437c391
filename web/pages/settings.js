// Project settings: name, description, the domain (within the project's type), the project as a dataset (COCO,
// YOLO, Pascal VOC or Custom Vision JSON: download, or add a zip), and deletion with a confirm.

import * as api from '../api.js';
import { h, mount, fail, toast, field, confirmDialog } from '../ui.js';
import { domainSelect, projectKind } from './projects.js';

export async function render(main, ctx) {
  const { project, projectId, navigate, reload } = ctx;
  const domains = await api.domains();
  const current = domains.find((d) => d.id === project.settings.domainId) || { type: 'Classification' };
  const name = h('input', { name: 'name', value: project.name, required: true, maxlength: 200 });
  const description = h('textarea', { name: 'description', rows: 3 }, project.description || '');
  const domain = domainSelect(domains, current.type, project.settings.domainId);
  const form = h('form.panel.stack', { 'aria-label': 'Project settings' },
    h('p.muted', projectKind(project, domains)),
    field('Name', name), field('Description', description), field('Domain', domain, 'Changing the domain applies to the next training.'),
    h('div.row', h('button.primary', { type: 'submit' }, 'Save changes')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api.updateProject(projectId, { name: name.value, description: description.value, settings: { domainId: domain.value } });
      toast('Saved.', 'ok');
      reload();
    } catch (err) { fail(err); }
  });
  const FORMATS = [['coco', 'COCO'], ['yolo', 'YOLO'], ['voc', 'Pascal VOC'], ['customvision', 'Custom Vision JSON']];
  const exportFormat = h('select', { 'aria-label': 'Dataset format to download' }, FORMATS.map(([v, l]) => h('option', { value: v }, l)));
  const download = h('a.button', { href: api.datasetUrl(projectId, 'coco'), download: '', id: 'dataset-download' }, 'Download zip');
  exportFormat.addEventListener('change', () => { download.href = api.datasetUrl(projectId, exportFormat.value); });
  const importFormat = h('select', { 'aria-label': 'Format of the dataset to add' }, FORMATS.map(([v, l]) => h('option', { value: v }, l)));
  const zip = h('input', { type: 'file', accept: '.zip,application/zip', id: 'dataset-zip', 'aria-label': 'Dataset zip to add' });
  const outcome = h('p.muted', { 'aria-live': 'polite' });
  zip.addEventListener('change', async () => {
    const f = zip.files[0];
    if (!f) return;
    outcome.textContent = 'Adding…';
    try {
      const s = await api.importDataset(projectId, importFormat.value, f);
      outcome.textContent = `${s.imagesCreated} image(s) added, ${s.imagesDuplicate} already there, `
        + `${s.regionsCreated} region(s), ${s.tagsCreated} new tag(s)${s.failed.length ? `, ${s.failed.length} failed` : ''}.`;
      outcome.dataset.done = 'true';
    } catch (err) { outcome.textContent = err.message; fail(err); } finally { zip.value = ''; }
  });
  const datasets = h('section.panel.stack', { 'aria-label': 'Dataset' }, h('h3', 'Dataset'),
    h('p.muted', 'Take the images and their labels to other tools, or bring labelled images in. Polygons drawn with click-to-segment travel in COCO.'),
    h('div.row.wrap', field('Download as', exportFormat), download),
    h('div.row.wrap', field('Add a zip in', importFormat), field('Zip', zip)), outcome);
  const danger = h('section.panel.dangerzone', h('h3', 'Delete project'),
    h('p', 'Deletes the project with its images, tags, iterations and stored predictions.'),
    h('button.danger', { onclick: async () => {
      if (!(await confirmDialog('Delete project', `Delete "${project.name}" and everything in it? This cannot be undone.`))) return;
      try { await api.deleteProject(projectId); toast('Project deleted.', 'ok'); navigate('#/projects'); } catch (err) { fail(err); }
    } }, 'Delete project'));
  mount(main, h('div.pagehead', h('h1', 'Settings')), form, datasets, danger);
}
