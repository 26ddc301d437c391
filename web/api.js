// The portal's client of Argus's public APIs: the Custom Vision Training API, the Prediction API and the
// vision (segmentation) jobs. The browser is signed in by an HttpOnly session cookie; every request that
// changes state carries the X-Argus-Portal header (the server's CSRF check). Errors come back as ApiError
// with the API's own message.

const TRAINING = '/customvision/v3.3/training';
const VISION_PROJECT = 'portal';
/** Most images the Training API takes in one upload or tagging call. */
export const BATCH = 64;

/** An API answer other than 2xx, with the API's code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

async function request(method, url, { json, body, headers = {}, signal } = {}) {
  const h = { 'X-Argus-Portal': '1', ...headers };
  if (json !== undefined) {
    h['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  }
  const r = await fetch(url, { method, headers: h, body, credentials: 'same-origin', signal });
  const text = await r.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (!r.ok) {
    const err = data && typeof data === 'object' ? (data.error && typeof data.error === 'object' ? data.error : data) : {};
    if (r.status === 401 && !url.startsWith('/ui/api/session')) window.dispatchEvent(new CustomEvent('argus:signed-out'));
    throw new ApiError(r.status, err.code, err.message || (typeof data === 'string' ? data : `HTTP ${r.status}`));
  }
  return data;
}

function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === '') continue;
    p.set(k, Array.isArray(v) ? v.join(',') : String(v));
  }
  const s = p.toString();
  return s ? `?${s}` : '';
}

const t = (method, path, params, opts) => request(method, TRAINING + path + qs(params), opts);

/** Splits `items` into arrays of at most `n`. */
export function chunks(items, n = BATCH) {
  const out = [];
  for (let i = 0; i < items.length; i += n) out.push(items.slice(i, i + n));
  return out;
}

// ---- sign-in
export const session = {
  status: () => request('GET', '/ui/api/session'),
  signIn: (trainingKey) => request('POST', '/ui/api/session', { json: { trainingKey } }),
  signOut: () => request('DELETE', '/ui/api/session'),
  keys: () => request('GET', '/ui/api/keys'),
};

// ---- Training API
export const domains = () => t('GET', '/domains');
export const projects = () => t('GET', '/projects');
export const project = (id) => t('GET', `/projects/${id}`);
export const createProject = (p) => t('POST', '/projects', p);
export const updateProject = (id, body) => t('PATCH', `/projects/${id}`, null, { json: body });
export const deleteProject = (id) => t('DELETE', `/projects/${id}`);

export const tags = (p, iterationId) => t('GET', `/projects/${p}/tags`, { iterationId });
/** The project as a dataset zip's URL (a GET the session cookie authorises, so a plain link downloads it). */
export const datasetUrl = (p, format) => `${TRAINING}/projects/${p}/dataset${qs({ format })}`;
/** Adds a dataset zip (COCO, YOLO, VOC or Custom Vision JSON) to the project. */
export const importDataset = (p, format, zip) =>
  t('POST', `/projects/${p}/dataset`, { format }, { body: zip, headers: { 'Content-Type': 'application/zip' } });
export const createTag = (p, name) => t('POST', `/projects/${p}/tags`, { name });
export const deleteTag = (p, tag) => t('DELETE', `/projects/${p}/tags/${tag}`);

/** One page of images: `filter` is Tagged, Untagged or All (GetImages, v3.4). */
export const images = (p, { filter = 'All', tagIds, take = 48, skip = 0, orderBy = 'Newest', iterationId } = {}) =>
  t('GET', `/projects/${p}/images`, { taggingStatus: filter, tagIds, take, skip, orderBy, iterationId });
export const imageCount = (p, { filter = 'All', tagIds, iterationId } = {}) =>
  t('GET', `/projects/${p}/images/count`, { taggingStatus: filter, tagIds, iterationId });
export const imagesByIds = (p, ids) => t('GET', `/projects/${p}/images/id`, { imageIds: ids });

/**
 * Sends `items` in batches of 64 with `send(batch)` (an ImageCreateSummary back); a batch the API refuses as a
 * whole counts as one failure per item, with the API's error code. `onBatch(done, total, results)` after each.
 * Each result is the API's image result plus `name`, what the portal calls it (`nameOf(item, result)`).
 */
async function inBatches(items, send, nameOf, onBatch) {
  const results = [];
  for (const batch of chunks(items)) {
    let summary;
    try {
      summary = await send(batch);
    } catch (e) {
      summary = { images: batch.map((item) => ({ sourceUrl: nameOf(item, {}), status: e.code || e.message })) };
    }
    (summary.images || []).forEach((r, i) => results.push({ name: nameOf(batch[i], r), ...r }));
    onBatch && onBatch(results.length, items.length, results);
  }
  return results;
}

/** Uploads files in batches of 64 (multipart), tagged with `tagIds`. */
export const uploadFiles = (p, files, tagIds, onBatch) => inBatches(files, (batch) => {
  const form = new FormData();
  for (const f of batch) form.append('imageData', f, f.name);
  return t('POST', `/projects/${p}/images`, { tagIds }, { body: form });
}, (f, r) => (f ? f.name : r.sourceUrl), onBatch);

/** Adds images by URL in batches of 64, tagged with `tagIds`. */
export const uploadUrls = (p, urls, tagIds, onBatch) => inBatches(urls, (batch) =>
  t('POST', `/projects/${p}/images/urls`, null, { json: { images: batch.map((url) => ({ url })), tagIds } }),
(url, r) => r.sourceUrl || url, onBatch);

export async function deleteImages(p, ids) {
  for (const b of chunks(ids, 256)) await t('DELETE', `/projects/${p}/images`, { imageIds: b });
}
export async function tagImages(p, imageIds, tagIds) {
  const pairs = imageIds.flatMap((imageId) => tagIds.map((tagId) => ({ imageId, tagId })));
  for (const b of chunks(pairs, 128)) await t('POST', `/projects/${p}/images/tags`, null, { json: { tags: b } });
}
export async function untagImages(p, imageIds, tagIds) {
  for (const b of chunks(imageIds)) await t('DELETE', `/projects/${p}/images/tags`, { imageIds: b, tagIds });
}
export const createRegions = (p, regions) => t('POST', `/projects/${p}/images/regions`, null, { json: { regions } });
export const deleteRegions = (p, ids) => t('DELETE', `/projects/${p}/images/regions`, { regionIds: ids });
export const proposals = (p, image) => t('POST', `/projects/${p}/images/${image}/regionproposals`);

export const train = (p, { trainingType, budget, selectedTags }) =>
  t('POST', `/projects/${p}/train`, {
    trainingType, reservedBudgetInHours: trainingType === 'Advanced' ? budget : undefined, selectedTags,
  });
export const iterations = (p) => t('GET', `/projects/${p}/iterations`);
export const iteration = (p, i) => t('GET', `/projects/${p}/iterations/${i}`);
export const renameIteration = (p, i, name) => t('PATCH', `/projects/${p}/iterations/${i}`, null, { json: { name } });
export const deleteIteration = (p, i) => t('DELETE', `/projects/${p}/iterations/${i}`);
export const publish = (p, i, publishName, predictionId) =>
  t('POST', `/projects/${p}/iterations/${i}/publish`, { publishName, predictionId });
export const unpublish = (p, i) => t('DELETE', `/projects/${p}/iterations/${i}/publish`);
export const performance = (p, i, threshold, overlapThreshold) =>
  t('GET', `/projects/${p}/iterations/${i}/performance`, { threshold, overlapThreshold });
export const performanceImages = (p, i, { tagIds, take = 48, skip = 0 } = {}) =>
  t('GET', `/projects/${p}/iterations/${i}/performance/images`, { tagIds, take, skip });
export const exports = (p, i) => t('GET', `/projects/${p}/iterations/${i}/export`);
export const exportIteration = (p, i, platform, flavor) =>
  t('POST', `/projects/${p}/iterations/${i}/export`, { platform, flavor });

export const quickTestFile = (p, file, iterationId) =>
  t('POST', `/projects/${p}/quicktest/image`, { iterationId }, { body: file, headers: { 'Content-Type': 'application/octet-stream' } });
export const quickTestUrl = (p, url, iterationId) =>
  t('POST', `/projects/${p}/quicktest/url`, { iterationId }, { json: { url } });

export const queryPredictions = (p, query) => t('POST', `/projects/${p}/predictions/query`, null, { json: query });
export const deletePredictions = (p, ids) => t('DELETE', `/projects/${p}/predictions`, { ids });
export const promotePredictions = (p, images) =>
  t('POST', `/projects/${p}/images/predictions`, null, { json: { images } });

export const suggestedImages = (p, iterationId, query) =>
  t('POST', `/projects/${p}/images/suggested`, { iterationId }, { json: query });

// ---- vision jobs (click-to-segment)
/** Starts a segmentation job on a training image; `prompt` holds `points` and/or `box`. */
export const segment = (p, image, prompt) =>
  request('POST', `/api/v1/projects/${VISION_PROJECT}/context/vision/segment`, {
    json: { items: [{ fileExternalId: `customvision:${p}/${image}` }], ...prompt },
  });
/** Starts SAM's image encoder on a training image ahead of its first prompt (nothing to do for GrabCut). */
export const prepareSegment = (p, image) =>
  request('POST', `/api/v1/projects/${VISION_PROJECT}/context/vision/segment/prepare`, {
    json: { items: [{ fileExternalId: `customvision:${p}/${image}` }] },
  });
export const segmentJob = (id) => request('GET', `/api/v1/projects/${VISION_PROJECT}/context/vision/segment/${id}`);

/** Polls a segmentation job until it ends (or `signal` aborts). */
export async function segmentAndWait(p, image, prompt, signal) {
  let job = await segment(p, image, prompt);
  while (job.status === 'Queued' || job.status === 'Running') {
    if (signal && signal.aborted) throw new DOMException('aborted', 'AbortError');
    await new Promise((r) => setTimeout(r, 150));
    job = await segmentJob(job.jobId);
  }
  if (job.status !== 'Completed') throw new ApiError(500, 'SegmentFailed', job.errorMessage || 'Segmentation failed.');
  return job;
}
