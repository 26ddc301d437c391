// Project settings: name, description, the domain (within the project's type), and deletion with a confirm.

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
  const danger = h('section.panel.dangerzone', h('h3', 'Delete project'),
    h('p', 'Deletes the project with its images, tags, iterations and stored predictions.'),
    h('button.danger', { onclick: async () => {
      if (!(await confirmDialog('Delete project', `Delete "${project.name}" and everything in it? This cannot be undone.`))) return;
      try { await api.deleteProject(projectId); toast('Project deleted.', 'ok'); navigate('#/projects'); } catch (err) { fail(err); }
    } }, 'Delete project'));
  mount(main, h('div.pagehead', h('h1', 'Settings')), form, danger);
}
