// Microsoft's Node.js Custom Vision quickstarts (image classification, then object detection), written the way
// their samples are, with the official npm packages, against a real `argus serve` given by the environment:
// ARGUS_ENDPOINT, ARGUS_TRAINING_KEY, ARGUS_PREDICTION_KEY and ARGUS_IMAGES (a folder the test fills with
// classification/<tag>/*.jpg and detection/<tag>/*.jpg plus detection/regions.json). Exits non-zero on the
// first thing that differs from what the hosted service answers.

'use strict';

const fs = require('fs');
const path = require('path');
const util = require('util');
const TrainingApi = require('@azure/cognitiveservices-customvision-training');
const PredictionApi = require('@azure/cognitiveservices-customvision-prediction');
const msRest = require('@azure/ms-rest-js');

const endPoint = process.env.ARGUS_ENDPOINT;
const trainingKey = process.env.ARGUS_TRAINING_KEY;
const predictionKey = process.env.ARGUS_PREDICTION_KEY;
const images = process.env.ARGUS_IMAGES;
const predictionResourceId = '/subscriptions/local/resourceGroups/argus/providers/Microsoft.CognitiveServices/accounts/argus';
const setTimeoutPromise = util.promisify(setTimeout);

const trainer = new TrainingApi.TrainingAPIClient(
  new msRest.ApiKeyCredentials({ inHeader: { 'Training-key': trainingKey } }), endPoint);
const predictor = new PredictionApi.PredictionAPIClient(
  new msRest.ApiKeyCredentials({ inHeader: { 'Prediction-key': predictionKey } }), endPoint);

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

async function waitForTraining(projectId, iteration) {
  const deadline = Date.now() + 900_000; // a hang guard: CI trains on two shared cores
  while (iteration.status === 'Training' && Date.now() < deadline) {
    await setTimeoutPromise(1000, null);
    iteration = await trainer.getIteration(projectId, iteration.id);
  }
  check(iteration.status === 'Completed', `training ended ${iteration.status}`);
  return iteration;
}

async function classification() {
  console.log('Creating a classification project...');
  const project = await trainer.createProject('Node quickstart: cat or coffee');
  const folder = path.join(images, 'classification');
  const tags = {};
  for (const name of fs.readdirSync(folder).sort()) {
    tags[name] = await trainer.createTag(project.id, name);
    const files = fs.readdirSync(path.join(folder, name)).sort();
    console.log(`Adding ${files.length} images tagged ${name}...`);
    // As the quickstart does: one createImagesFromData call per file.
    for (const file of files) {
      const summary = await trainer.createImagesFromData(
        project.id, fs.readFileSync(path.join(folder, name, file)), { tagIds: [tags[name].id] });
      check(summary.isBatchSuccessful, `upload of ${file}: ${JSON.stringify(summary.images)}`);
    }
  }
  // A primitive answer comes back as { body } (ms-rest-js).
  const count = await trainer.getTaggedImageCount(project.id);
  check(count.body === 12, `tagged image count ${JSON.stringify(count.body)}`);

  console.log('Training...');
  let iteration = await trainer.trainProject(project.id);
  check(iteration.status === 'Training', `trainProject answered ${iteration.status}`);
  iteration = await waitForTraining(project.id, iteration);
  check(iteration.trainedAt instanceof Date, 'trainedAt is a date');
  const perf = await trainer.getIterationPerformance(project.id, iteration.id, { threshold: 0.5 });
  check(perf.perTagPerformance.length === 2 && perf.precision >= 0 && perf.precision <= 1, 'performance');

  const published = await trainer.publishIteration(project.id, iteration.id, 'classifyModel', predictionResourceId);
  check(published.body === true, 'publishIteration answers true');
  const test = fs.readFileSync(path.join(images, 'test-cat.jpg'));
  const results = await predictor.classifyImage(project.id, 'classifyModel', test);
  console.log('Results:');
  results.predictions.forEach((p) => console.log(`\t ${p.tagName}: ${(p.probability * 100.0).toFixed(2)}%`));
  check(results.predictions[0].tagName === 'cat', `top tag ${results.predictions[0].tagName}`);
  check(results.iteration === iteration.id && results.project === project.id, 'prediction names the iteration');
  const noStore = await predictor.classifyImageWithNoStore(project.id, 'classifyModel', test);
  check(noStore.predictions.length === 2, 'classifyImageWithNoStore');
  const stored = await trainer.queryPredictions(project.id, { maxCount: 10 });
  check(stored.results.some((r) => r.id === results.id), 'the stored prediction is listed');
  // The SDK surfaces the service's error code.
  try {
    await trainer.trainProject(project.id);
    check(false, 'training again with nothing new must fail');
  } catch (e) {
    check(e.code === 'BadRequestTrainingNotNeeded', `error code ${e.code}`);
  }
}

async function detection() {
  console.log('Creating an object detection project...');
  const domains = await trainer.getDomains();
  const domain = domains.find((d) => d.type === 'ObjectDetection' && d.name === 'General');
  check(domain, 'the General object detection domain');
  const project = await trainer.createProject('Node quickstart: detector', { domainId: domain.id });
  const folder = path.join(images, 'detection');
  const regions = JSON.parse(fs.readFileSync(path.join(folder, 'regions.json'), 'utf8'));
  const tags = {};
  for (const name of Object.keys(regions).sort()) tags[name] = await trainer.createTag(project.id, name);
  // As the quickstart does: entries with regions, sent through createImagesFromFiles.
  const entries = [];
  for (const [name, files] of Object.entries(regions)) {
    for (const [file, [left, top, width, height]] of Object.entries(files)) {
      entries.push({
        name: file,
        contents: fs.readFileSync(path.join(folder, name, file)),
        regions: [{ tagId: tags[name].id, left, top, width, height }],
      });
    }
  }
  for (let i = 0; i < entries.length; i += 64) {
    const summary = await trainer.createImagesFromFiles(project.id, { images: entries.slice(i, i + 64) });
    check(summary.isBatchSuccessful, `createImagesFromFiles: ${JSON.stringify(summary.images.map((x) => x.status))}`);
  }
  const sample = (await trainer.getTaggedImages(project.id, { take: 1 }))[0];
  check(sample.regions.length === 1 && sample.regions[0].left >= 0, 'regions come back');
  const proposals = await trainer.getImageRegionProposals(project.id, sample.id);
  check(proposals.imageId === sample.id && Array.isArray(proposals.proposals), 'region proposals');

  console.log('Training...');
  let iteration = await trainer.trainProject(project.id);
  iteration = await waitForTraining(project.id, iteration);
  await trainer.publishIteration(project.id, iteration.id, 'detectModel', predictionResourceId);
  const results = await predictor.detectImage(project.id, 'detectModel', fs.readFileSync(path.join(images, 'test-cup.jpg')));
  console.log('Results:');
  results.predictions.slice(0, 3).forEach((p) => console.log(
    `\t ${p.tagName}: ${(p.probability * 100.0).toFixed(2)}% ${p.boundingBox.left.toFixed(2)},${p.boundingBox.top.toFixed(2)},`
    + `${p.boundingBox.width.toFixed(2)},${p.boundingBox.height.toFixed(2)}`));
  check(results.predictions.length > 0, 'detections');
  const best = results.predictions[0];
  check(best.tagName === 'cup', `best detection ${best.tagName}`);
  const b = best.boundingBox;
  check(b.left >= 0 && b.top >= 0 && b.left + b.width <= 1.0001 && b.top + b.height <= 1.0001, 'a normalised box');
}

(async () => {
  await classification();
  await detection();
  console.log('Node quickstarts passed.');
})().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  if (e && e.response) console.error(e.response.status, e.response.bodyAsText);
  process.exit(1);
});
