// Projects: every project as a card (thumbnail, type, image and iteration counts) and the New project dialog
// (name, description, project type, and a domain of that type from GetDomains).

import * as api from '../api.js';
import { h, mount, empty, field, formDialog, when } from '../ui.js';

/** Project types the dialog offers: the label, the domain type, and the classification type. */
export const PROJECT_TYPES = [
  { key: 'Multiclass', label: 'Classification: one tag per image (Multiclass)', domainType: 'Classification' },
  { key: 'Multilabel', label: 'Classification: several tags per image (Multilabel)', domainType: 'Classification' },
  { key: 'ObjectDetection', label: 'Object detection', domainType: 'ObjectDetection' },
];

/** The domain select for `domainType`, `selected` pre-chosen. */
export function domainSelect(domains, domainType, selected) {
  return h('select', { name: 'domainId', required: true },
    domains.filter((d) => d.type === domainType).map((d) =>
      h('option', { value: d.id, selected: d.id === selected }, d.name + (d.exportable ? ' (exportable)' : ''))));
}

/** `Object detection` or `Classification (Multiclass)` for a project and its domain. */
export function projectKind(p, domains) {
  const d = domains.find((x) => x.id === p.settings.domainId);
  if (d && d.type === 'ObjectDetection') return 'Object detection';
  return `Classification (${p.settings.classificationType || 'Multiclass'})`;
}

export async function render(main, { navigate }) {
  const [projects, domains] = await Promise.all([api.projects(), api.domains()]);
  const newButton = h('button.primary', { onclick: () => openCreate(domains, navigate) }, '+ New project');
  const header = h('div.pagehead', h('h1', 'Projects'), newButton);
  if (!projects.length) {
    mount(main, header, empty('No projects yet', 'Create a classification or an object detection project, '
      + 'upload a few dozen photographs, tag them and train.', h('button.primary', { onclick: () => openCreate(domains, navigate) }, 'Create a project')));
    return;
  }
  projects.sort((a, b) => (b.lastModified || '').localeCompare(a.lastModified || ''));
  const grid = h('div.cards');
  for (const p of projects) {
    const counts = h('span.muted', '…');
    const thumb = p.thumbnailUri ? h('img.thumb', { src: p.thumbnailUri, alt: '', loading: 'lazy' }) : h('div.thumb.placeholder', 'No images');
    if (!p.thumbnailUri) {
      // No project thumbnail set: show its newest image.
      api.images(p.id, { take: 1 }).then(([img]) => {
        if (img) thumb.replaceWith(h('img.thumb', { src: img.thumbnailUri, alt: '', loading: 'lazy' }));
      }).catch(() => {});
    }
    grid.append(h('a.card.project', { href: `#/projects/${p.id}/images`, dataset: { projectId: p.id } },
      thumb,
      h('div.body', h('h3', p.name), h('p.muted', projectKind(p, domains)), p.description && h('p', p.description),
        counts, h('small.muted', `Changed ${when(p.lastModified)}`))));
    Promise.all([api.imageCount(p.id), api.iterations(p.id)]).then(([n, its]) => {
      counts.textContent = `${n} image${n === 1 ? '' : 's'} · ${its.length} iteration${its.length === 1 ? '' : 's'}`;
    }).catch(() => { counts.textContent = ''; });
  }
  mount(main, header, grid);
}

function openCreate(domains, navigate) {
  const typeSelect = h('select', { name: 'type' }, PROJECT_TYPES.map((t) => h('option', { value: t.key }, t.label)));
  const domainBox = h('div');
  const refresh = () => {
    const t = PROJECT_TYPES.find((x) => x.key === typeSelect.value);
    mount(domainBox, field('Domain', domainSelect(domains, t.domainType), 'Compact domains can be exported.'));
  };
  typeSelect.addEventListener('change', refresh);
  refresh();
  formDialog('New project', [
    field('Name', h('input', { name: 'name', required: true, maxlength: 200, autofocus: true })),
    field('Description', h('textarea', { name: 'description', rows: 2 })),
    field('Project type', typeSelect),
    domainBox,
  ], 'Create project', async (form) => {
    const f = new FormData(form);
    const type = f.get('type');
    const p = await api.createProject({
      name: f.get('name'),
      description: f.get('description'),
      domainId: f.get('domainId'),
      classificationType: type === 'ObjectDetection' ? undefined : type,
    });
    navigate(`#/projects/${p.id}/images`);
  });
}
