// The portal's shell: sign-in, the hash router (#/projects, #/projects/{id}/{page}[/{arg}]) and the project
// navigation. Each page is a module whose `render(main, ctx)` draws into <main> and may return a cleanup.

import * as api from './api.js';
import { h, mount, fail, field } from './ui.js';
import * as projectsPage from './pages/projects.js';
import * as imagesPage from './pages/images.js';
import * as labelPage from './pages/label.js';
import * as trainPage from './pages/performance.js';
import * as quickTestPage from './pages/quicktest.js';
import * as predictionsPage from './pages/predictions.js';
import * as suggestionsPage from './pages/suggestions.js';
import * as settingsPage from './pages/settings.js';

const main = document.getElementById('app');
const nav = document.getElementById('project-nav');
const signOutButton = document.getElementById('sign-out');

const PAGES = {
  images: { title: 'Training images', mod: imagesPage },
  label: { title: 'Label', mod: labelPage, hidden: true },
  performance: { title: 'Performance', mod: trainPage },
  quicktest: { title: 'Quick test', mod: quickTestPage },
  predictions: { title: 'Predictions', mod: predictionsPage },
  suggestions: { title: 'Smart labeler', mod: suggestionsPage },
  settings: { title: 'Settings', mod: settingsPage },
};

let cleanup = null;
let signedIn = false;
const projectCache = new Map();

/** The project with `id`, cached while the portal stays open (settings drop it after a change). */
async function getProject(id) {
  if (!projectCache.has(id)) projectCache.set(id, await api.project(id));
  return projectCache.get(id);
}

function renderSignIn(message) {
  nav.replaceChildren();
  signOutButton.hidden = true;
  const input = h('input', { type: 'password', name: 'trainingKey', autocomplete: 'current-password', required: true, id: 'training-key' });
  const error = h('p.error', { role: 'alert' }, message || '');
  const form = h('form.card.signin.stack', { 'aria-label': 'Sign in' },
    h('h2', 'Sign in to Argus'),
    h('p.muted', 'Enter this server\'s Training key (ARGUS_TRAINING_KEY, or the one argus keys printed). '
      + 'The browser keeps only a session cookie, never the key.'),
    field('Training key', input),
    error,
    h('button.primary', { type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api.session.signIn(input.value);
      signedIn = true;
      route();
    } catch (err) {
      error.textContent = err.message;
    }
  });
  mount(main, form);
  input.focus();
}

function renderNav(projectId, page, project) {
  if (!projectId) {
    nav.replaceChildren();
    return;
  }
  mount(nav,
    h('a.crumb', { href: '#/projects' }, 'Projects'), h('span.sep', '/'),
    h('span.crumb.strong', project ? project.name : '…'),
    h('span.tabs', Object.entries(PAGES).filter(([, p]) => !p.hidden).map(([key, p]) =>
      h('a.tab', { href: `#/projects/${projectId}/${key}`, 'aria-current': key === page ? 'page' : false }, p.title))));
}

async function route() {
  if (cleanup) { try { cleanup(); } catch { /* a page's cleanup never blocks navigation */ } cleanup = null; }
  if (!signedIn) {
    try {
      signedIn = (await api.session.status()).signedIn;
    } catch {
      signedIn = false;
    }
    if (!signedIn) return renderSignIn();
  }
  signOutButton.hidden = false;
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  const [top, projectId, page = 'images', arg] = parts;
  main.replaceChildren(h('p.muted', 'Loading…'));
  try {
    if (top !== 'projects' || !projectId) {
      renderNav(null);
      document.title = 'Projects · Argus';
      cleanup = await projectsPage.render(main, { navigate });
      return;
    }
    const def = PAGES[page] || PAGES.images;
    renderNav(projectId, page);
    const project = await getProject(projectId);
    renderNav(projectId, page, project);
    document.title = `${def.title} · ${project.name} · Argus`;
    const reload = () => { projectCache.delete(projectId); route(); };
    cleanup = await def.mod.render(main, { project, projectId, arg, navigate, reload });
  } catch (err) {
    if (err.status === 401) return;
    mount(main, h('div.empty', h('h3', 'Something went wrong'), h('p', err.message),
      h('a.button', { href: '#/projects' }, 'Back to projects')));
    fail(err);
  }
}

/** Goes to `hash` (e.g. `#/projects/…/images`). */
function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

signOutButton.addEventListener('click', async () => {
  try { await api.session.signOut(); } catch (err) { fail(err); }
  signedIn = false;
  projectCache.clear();
  renderSignIn('Signed out.');
});
window.addEventListener('argus:signed-out', () => {
  if (!signedIn) return;
  signedIn = false;
  renderSignIn('Your session has ended. Sign in again.');
});
window.addEventListener('hashchange', route);
route();
