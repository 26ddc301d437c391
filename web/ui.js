// Small DOM helpers shared by the pages: an element builder, toasts, a confirm dialog, a progress bar and
// the formatting of numbers. No framework: every page renders into the element it is given.

/** Builds an element: `h('button.primary', {onclick}, 'Save')`. Children may be strings, nodes or arrays. */
export function h(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split('.');
  const el = document.createElement(tag || 'div');
  if (classes.length) el.className = classes.join(' ');
  if (attrs !== undefined && attrs !== null && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A message that fades after a few seconds; `kind` is info, ok or error. */
export function toast(message, kind = 'info') {
  const box = document.getElementById('toasts');
  const t = h(`div.toast.${kind}`, message);
  box.append(t);
  while (box.children.length > 3) box.firstChild.remove();
  setTimeout(() => t.remove(), kind === 'error' ? 8000 : 4000);
}

/** Shows `err` (an ApiError or any Error) as an error toast and logs nothing to the console. */
export function fail(err) {
  toast(err && err.message ? err.message : String(err), 'error');
}

/** A modal dialog; resolves to true when confirmed. */
export function confirmDialog(title, text, confirmLabel = 'Delete') {
  return new Promise((resolve) => {
    const dlg = h('dialog.modal', h('h3', title), h('p', text),
      h('div.row.end', h('button.ghost', { value: 'cancel', onclick: () => dlg.close('cancel') }, 'Cancel'),
        h('button.danger', { value: 'ok', onclick: () => dlg.close('ok') }, confirmLabel)));
    dlg.addEventListener('close', () => { resolve(dlg.returnValue === 'ok'); dlg.remove(); });
    document.body.append(dlg);
    dlg.showModal();
  });
}

/** A modal form: `fields` are nodes; `onSubmit(form)` may throw to keep it open. */
export function formDialog(title, fields, submitLabel, onSubmit) {
  const form = h('form.stack', { method: 'dialog' }, h('h3', title), fields,
    h('div.row.end', h('button.ghost', { type: 'button', onclick: () => dlg.close() }, 'Cancel'),
      h('button.primary', { type: 'submit' }, submitLabel)));
  const dlg = h('dialog.modal', form);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await onSubmit(form);
      dlg.close();
    } catch (err) {
      fail(err);
    }
  });
  dlg.addEventListener('close', () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
  return dlg;
}

/** A progress bar; `set(done, total, label)` updates it. */
export function progressBar() {
  const fill = h('div.fill');
  const label = h('span.label');
  const el = h('div.progress', { role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100 }, fill, label);
  el.set = (done, total, text) => {
    const pct = total > 0 ? Math.round((100 * done) / total) : 0;
    fill.style.width = `${pct}%`;
    el.setAttribute('aria-valuenow', pct);
    el.dataset.percent = pct;
    label.textContent = text ?? `${pct} %`;
  };
  el.set(0, 1);
  return el;
}

/** A percentage with one decimal. */
export const pct = (x) => (x === null || x === undefined || Number.isNaN(x) ? '—' : `${(100 * x).toFixed(1)} %`);

/** A short local date and time. */
export const when = (s) => (s ? new Date(s).toLocaleString() : '—');

/** An empty state: a title and what to do next. */
export const empty = (title, text, ...actions) => h('div.empty', h('h3', title), h('p.muted', text), actions);

/** A labelled form field. */
export const field = (label, input, hint) => h('label.field', h('span', label), input, hint && h('small.muted', hint));
