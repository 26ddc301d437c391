//! `argus import customvision`: copies projects from any Custom Vision Training endpoint (Azure's, or another
//! Argus) into an Argus, through both sides' public Training API.
//!
//! Per project: the project (its source id kept when the destination has it free, otherwise a new one, printed),
//! its domain (the same id when the destination has it, otherwise the destination's General domain of the same
//! type), its tags (ids kept the same way, type and description copied), then every tagged and untagged image,
//! page by page: the original bytes from `originalImageUri`, uploaded with their tags and regions in batches of at
//! most 64, then their metadata. A rerun is cheap and safe: the journal skips finished images without
//! downloading them, the destination answers `OKDuplicate` for an image it already has (whose missing tags,
//! regions and metadata are then added), and projects and tags are found again by id. Iterations are not copied
//! (the service does not export its models); `--train` retrains each project after the import.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::client::{api_failure, Domain, Image, ImageCreateSummary, Project, Region, Retry, Tag, TrainingApi};
use crate::journal::{Journal, ProjectState};

/// Most images per upload batch (the service's limit).
pub const MAX_BATCH: usize = 64;
/// Most images per listing page (the service's limit).
pub const MAX_PAGE: usize = 256;
/// Most raw image bytes in one upload batch (base64 in JSON adds a third).
const MAX_BATCH_BYTES: usize = 24 << 20;
/// Largest original the migration downloads (the service accepts at most 6 MB; larger ones are reported).
const MAX_IMAGE_BYTES: usize = 64 << 20;

/// What to import and how.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Source projects by id or name; empty: all of them.
    pub projects: Vec<String>,
    /// Images per listing page (at most 256).
    pub page_size: usize,
    /// Images per upload batch (at most 64).
    pub batch_size: usize,
    /// Concurrent downloads of originals.
    pub downloads: usize,
    /// Train each imported project once its images are in (`Regular`), and wait for it.
    pub train: bool,
    /// Show progress bars.
    pub progress: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            projects: Vec::new(),
            page_size: MAX_PAGE,
            batch_size: MAX_BATCH,
            downloads: 8,
            train: false,
            progress: true,
        }
    }
}

/// Counts of one run.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Projects visited.
    pub projects: usize,
    /// Projects created at the destination by this run.
    pub projects_created: usize,
    /// Tags created by this run.
    pub tags_copied: usize,
    /// Tags that were already there.
    pub tags_skipped: usize,
    /// Images uploaded by this run.
    pub images_copied: usize,
    /// Images that were already there (in the journal, or found by content).
    pub images_skipped: usize,
    /// Images that could not be copied (see the failures).
    pub images_failed: usize,
    /// Regions created by this run (with uploads and on images that were already there).
    pub regions_copied: usize,
    /// Source project id → destination project id and name, for every project visited.
    pub project_ids: Vec<IdMapping>,
    /// Iterations trained with `--train`: project name → the iteration's final status.
    pub trained: BTreeMap<String, String>,
    /// What could not be copied, and why.
    pub failures: Vec<Failure>,
    /// Things the user should know (a domain mapped to another, iterations not copied).
    pub notes: Vec<String>,
}

/// A source project and the project it became.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdMapping {
    /// Name.
    pub name: String,
    /// Id at the source.
    pub source: Uuid,
    /// Id at the destination (the same when it was free).
    pub destination: Uuid,
}

/// One thing that could not be copied.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// Source project.
    pub project: Uuid,
    /// Source image, when the failure is about one.
    pub image: Option<Uuid>,
    /// What was being done: `download`, `upload`, `tags`, `regions`, `metadata`, `train`, `project`.
    pub stage: String,
    /// Why, in words (the service's status or error).
    pub reason: String,
}

/// The two ends of an import and its journal.
pub struct Importer<'a> {
    /// Where projects come from.
    pub source: &'a TrainingApi,
    /// Where they go.
    pub destination: &'a TrainingApi,
    /// What is already done.
    pub journal: &'a mut Journal,
    /// How.
    pub options: ImportOptions,
}

/// A source image waiting to be uploaded, with its bytes.
struct Pending {
    source: Image,
    bytes: bytes::Bytes,
}

impl Importer<'_> {
    /// Imports the selected projects; what failed is in the summary's failures, and an error is returned only when
    /// the migration cannot go on (the source or destination unreachable, the journal unwritable).
    pub async fn run(&mut self) -> Result<Summary> {
        let mut summary = Summary::default();
        let all: Vec<Project> = self.source.get("projects", &[]).await.context("listing the source's projects")?;
        let selected = select(&all, &self.options.projects)?;
        let domains: Vec<Domain> =
            self.destination.get("domains", &[]).await.context("listing the destination's domains")?;
        let source_domains: Vec<Domain> = self.source.get("domains", &[]).await.unwrap_or_default();
        summary.notes.push(
            "Iterations (trained models) are not copied: the Custom Vision API does not export them. Pass --train \
             to retrain each project after the import."
                .into(),
        );
        for project in selected {
            summary.projects += 1;
            let dest = self.project(&project, &domains, &source_domains, &mut summary).await?;
            summary.project_ids.push(IdMapping { name: project.name.clone(), source: project.id, destination: dest });
            self.tags(&project, dest, &mut summary).await?;
            self.images(&project, dest, &mut summary).await?;
            if self.options.train {
                self.train(&project, dest, &mut summary).await;
            }
        }
        Ok(summary)
    }

    /// Finds or creates the destination project; returns its id.
    async fn project(
        &mut self,
        project: &Project,
        domains: &[Domain],
        source_domains: &[Domain],
        summary: &mut Summary,
    ) -> Result<Uuid> {
        // The id is chosen, and journaled, before anything is created: a rerun after a crash finds the project.
        let state = self.journal.projects.entry(project.id).or_insert_with(|| ProjectState {
            name: project.name.clone(),
            destination: project.id,
            ..Default::default()
        });
        let mut id = state.destination;
        self.journal.save()?;
        if self.exists(&format!("projects/{id}")).await? {
            return Ok(id);
        }
        let domain = map_domain(project, domains, source_domains, summary);
        for _ in 0..2 {
            let mut query = vec![("name", project.name.clone()), ("requestedId", id.to_string())];
            if !project.description.is_empty() {
                query.push(("description", project.description.clone()));
            }
            if let Some(d) = domain {
                query.push(("domainId", d.to_string()));
            }
            if let Some(c) = &project.settings.classification_type {
                query.push(("classificationType", c.clone()));
            }
            if !project.settings.target_export_platforms.is_empty() {
                query.push(("targetExportPlatforms", project.settings.target_export_platforms.join(",")));
            }
            match self.destination.post::<Project>("projects", &query, None, Retry::Idempotent).await {
                Ok(p) => {
                    summary.projects_created += 1;
                    self.copy_settings(project, p.id, summary).await;
                    // A destination that does not honour `requestedId` chose its own id: that is the mapping.
                    if let Some(s) = self.journal.projects.get_mut(&project.id) {
                        s.destination = p.id;
                    }
                    self.journal.save()?;
                    return Ok(p.id);
                }
                Err(e) if api_failure(&e).is_some_and(|f| f.code == "BadRequestInvalidIds") => {
                    // A retried create that had gone through, or the id belongs to another project there.
                    if self.exists(&format!("projects/{id}")).await? {
                        return Ok(id);
                    }
                    id = Uuid::new_v4();
                    if let Some(s) = self.journal.projects.get_mut(&project.id) {
                        s.destination = id;
                    }
                    self.journal.save()?;
                }
                Err(e) => return Err(e.context(format!("creating project '{}' at the destination", project.name))),
            }
        }
        Err(anyhow!("could not create project '{}' at the destination", project.name))
    }

    /// Copies the settings CreateProject cannot set (the augmentation settings) with UpdateProject; a
    /// destination that refuses them gets a note, not a failed migration.
    async fn copy_settings(&self, project: &Project, dest: Uuid, summary: &mut Summary) {
        let Some(settings) = project.settings.image_processing_settings.as_ref().filter(|v| !v.is_null()) else {
            return;
        };
        let body = json!({ "settings": { "imageProcessingSettings": settings } });
        let path = format!("projects/{dest}");
        if let Err(e) = self.destination.send(reqwest::Method::PATCH, &path, &[], Some(&body), Retry::Idempotent).await
        {
            summary
                .notes
                .push(format!("Project '{}': its image processing settings were not copied ({e:#}).", project.name));
        }
    }

    /// Whether a GET of `path` at the destination finds something (404: no).
    async fn exists(&self, path: &str) -> Result<bool> {
        match self.destination.get::<serde_json::Value>(path, &[]).await {
            Ok(_) => Ok(true),
            Err(e) if api_failure(&e).is_some_and(|f| f.status == reqwest::StatusCode::NOT_FOUND) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Copies the tags that are not there yet and records the id mapping.
    async fn tags(&mut self, project: &Project, dest: Uuid, summary: &mut Summary) -> Result<()> {
        let source: Vec<Tag> = self.source.get(&format!("projects/{}/tags", project.id), &[]).await?;
        let mut existing: Vec<Tag> = self.destination.get(&format!("projects/{dest}/tags"), &[]).await?;
        for tag in source {
            let state = self.journal.projects.entry(project.id).or_default();
            let wanted = state.tags.get(&tag.id).copied().unwrap_or(tag.id);
            if let Some(t) =
                existing.iter().find(|t| t.id == wanted).or_else(|| existing.iter().find(|t| t.name == tag.name))
            {
                state.tags.insert(tag.id, t.id);
                summary.tags_skipped += 1;
                continue;
            }
            let mut query = vec![("name", tag.name.clone())];
            if let Some(d) = tag.description.as_ref().filter(|d| !d.is_empty()) {
                query.push(("description", d.clone()));
            }
            if let Some(k) = &tag.kind {
                query.push(("type", k.clone()));
            }
            let path = format!("projects/{dest}/tags");
            let mut with_id = query.clone();
            with_id.push(("requestedId", wanted.to_string()));
            let created: Tag = match self.destination.post(&path, &with_id, None, Retry::OnlyThrottled).await {
                Ok(t) => t,
                // Tag ids are unique across a server: the source's may belong to another project there.
                Err(e) if api_failure(&e).is_some_and(|f| f.code == "BadRequestInvalidIds") => {
                    self.destination.post(&path, &query, None, Retry::OnlyThrottled).await?
                }
                // A create that went through before a lost answer: the name is taken now, by our tag.
                Err(e)
                    if api_failure(&e).is_some_and(|f| {
                        matches!(f.code.as_str(), "BadRequestTagNameNotUnique" | "BadRequestDuplicateTag")
                    }) =>
                {
                    existing = self.destination.get(&path, &[]).await?;
                    match existing.iter().find(|t| t.name == tag.name) {
                        Some(t) => t.clone(),
                        None => return Err(e),
                    }
                }
                Err(e) => return Err(e.context(format!("creating tag '{}'", tag.name))),
            };
            let state = self.journal.projects.entry(project.id).or_default();
            state.tags.insert(tag.id, created.id);
            existing.push(created);
            summary.tags_copied += 1;
            self.journal.save()?;
        }
        self.journal.save()
    }

    /// Copies every tagged and untagged image.
    async fn images(&mut self, project: &Project, dest: Uuid, summary: &mut Summary) -> Result<()> {
        let p = project.id;
        let tagged: u64 = self.source.get(&format!("projects/{p}/images/tagged/count"), &[]).await.unwrap_or(0);
        let untagged: u64 = self.source.get(&format!("projects/{p}/images/untagged/count"), &[]).await.unwrap_or(0);
        let bar = self.bar(tagged + untagged, &project.name);
        let started = Instant::now();
        let (copied_before, skipped_before) = (summary.images_copied, summary.images_skipped);
        let take = self.options.page_size.clamp(1, MAX_PAGE);
        for listing in ["tagged", "untagged"] {
            let mut skip = 0usize;
            loop {
                let query = [("take", take.to_string()), ("skip", skip.to_string())];
                let page: Vec<Image> = self
                    .source
                    .get(&format!("projects/{p}/images/{listing}"), &query)
                    .await
                    .with_context(|| format!("listing the {listing} images of '{}'", project.name))?;
                let n = page.len();
                let done = &self.journal.projects.entry(p).or_default().images;
                let (finished, todo): (Vec<Image>, Vec<Image>) =
                    page.into_iter().partition(|i| done.contains_key(&i.id));
                summary.images_skipped += finished.len();
                bar.inc(finished.len() as u64);
                let mut chunk = Vec::new();
                for image in todo {
                    chunk.push(image);
                    if chunk.len() == self.options.batch_size.clamp(1, MAX_BATCH) {
                        self.copy_chunk(project, dest, std::mem::take(&mut chunk), summary, &bar).await?;
                    }
                }
                if !chunk.is_empty() {
                    self.copy_chunk(project, dest, chunk, summary, &bar).await?;
                }
                if n < take {
                    break;
                }
                skip += n;
            }
        }
        if let Some(s) = self.journal.projects.get_mut(&p) {
            s.complete = true;
        }
        self.journal.save()?;
        bar.finish_and_clear();
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        let copied = summary.images_copied - copied_before;
        println!(
            "{}: {} images copied, {} already there ({:.1} images/s)",
            project.name,
            copied,
            summary.images_skipped - skipped_before,
            copied as f64 / secs
        );
        Ok(())
    }

    /// Downloads a chunk of source images and uploads them in batches that fit the request limit.
    async fn copy_chunk(
        &mut self,
        project: &Project,
        dest: Uuid,
        images: Vec<Image>,
        summary: &mut Summary,
        bar: &ProgressBar,
    ) -> Result<()> {
        let source = self.source;
        let downloaded: Vec<(Image, Result<bytes::Bytes>)> =
            futures::stream::iter(images.into_iter().map(|image| async move {
                let r = match image.original_image_uri.as_deref().filter(|u| !u.is_empty()) {
                    Some(u) => source.download(u, MAX_IMAGE_BYTES).await,
                    None => Err(anyhow!("the source gives no originalImageUri")),
                };
                (image, r)
            }))
            .buffered(self.options.downloads.max(1))
            .collect()
            .await;
        let mut batch: Vec<Pending> = Vec::new();
        let mut bytes = 0usize;
        for (image, r) in downloaded {
            match r {
                Ok(b) => {
                    if !batch.is_empty() && bytes + b.len() > MAX_BATCH_BYTES {
                        self.upload(project, dest, std::mem::take(&mut batch), summary, bar).await?;
                        bytes = 0;
                    }
                    bytes += b.len();
                    batch.push(Pending { source: image, bytes: b });
                }
                Err(e) => {
                    summary.images_failed += 1;
                    bar.inc(1);
                    summary.failures.push(failure(project.id, Some(image.id), "download", &e));
                }
            }
        }
        if !batch.is_empty() {
            self.upload(project, dest, batch, summary, bar).await?;
        }
        Ok(())
    }

    /// Uploads one batch with tags and regions, completes the images that were already there, sets metadata,
    /// and journals the batch.
    async fn upload(
        &mut self,
        project: &Project,
        dest: Uuid,
        batch: Vec<Pending>,
        summary: &mut Summary,
        bar: &ProgressBar,
    ) -> Result<()> {
        let tags = self.journal.projects.get(&project.id).map(|s| s.tags.clone()).unwrap_or_default();
        let wanted: Vec<Wanted> = batch.iter().map(|p| Wanted::of(&p.source, &tags)).collect();
        let entries: Vec<serde_json::Value> = batch
            .iter()
            .zip(&wanted)
            .map(|(p, w)| {
                json!({
                    "name": format!("{}", p.source.id),
                    "contents": STANDARD.encode(&p.bytes),
                    "tagIds": w.tags,
                    "regions": w.regions,
                })
            })
            .collect();
        let body = json!({ "images": entries });
        // Uploads deduplicate by content, so a repeated batch creates nothing twice.
        let answer: ImageCreateSummary = self
            .destination
            .post(&format!("projects/{dest}/images/files"), &[], Some(&body), Retry::Idempotent)
            .await
            .with_context(|| format!("uploading images of '{}'", project.name))?;
        if answer.images.len() != batch.len() {
            return Err(anyhow!("the destination answered {} results for {} images", answer.images.len(), batch.len()));
        }
        let mut links = Vec::new();
        let mut regions = Vec::new();
        let mut metadata: HashMap<BTreeMap<String, String>, Vec<Uuid>> = HashMap::new();
        let mut done: Vec<(Uuid, Uuid)> = Vec::new();
        for ((pending, want), result) in batch.iter().zip(&wanted).zip(&answer.images) {
            let src = pending.source.id;
            let image = match (&result.status[..], &result.image) {
                ("OK" | "OKDuplicate", Some(image)) => image,
                (status, _) => {
                    summary.images_failed += 1;
                    summary.failures.push(Failure {
                        project: project.id,
                        image: Some(src),
                        stage: "upload".into(),
                        reason: format!("the destination answered {status}"),
                    });
                    continue;
                }
            };
            if result.status == "OK" {
                summary.images_copied += 1;
                summary.regions_copied += want.regions.len();
            } else {
                summary.images_skipped += 1;
                let have = image.tag_ids();
                links.extend(
                    want.tags.iter().filter(|t| !have.contains(t)).map(|t| json!({"imageId": image.id, "tagId": t})),
                );
                for r in want.regions.iter().filter(|r| !image.regions().iter().any(|h| h.same_as(r))) {
                    regions.push((image.id, *r));
                }
            }
            if let Some(m) = pending.source.metadata.as_ref().filter(|m| !m.is_empty()) {
                if image.metadata.as_ref() != Some(m) {
                    metadata.entry(m.clone()).or_default().push(image.id);
                }
            }
            done.push((src, image.id));
        }
        for chunk in links.chunks(MAX_BATCH) {
            let body = json!({ "tags": chunk });
            if let Err(e) = self
                .destination
                .post::<serde_json::Value>(&format!("projects/{dest}/images/tags"), &[], Some(&body), Retry::Idempotent)
                .await
            {
                summary.failures.push(failure(project.id, None, "tags", &e));
            }
        }
        summary.regions_copied += self.add_regions(project, dest, regions, summary).await;
        for (m, ids) in metadata {
            for chunk in ids.chunks(MAX_BATCH) {
                let csv = chunk.iter().map(Uuid::to_string).collect::<Vec<_>>().join(",");
                let body = serde_json::to_value(&m)?;
                if let Err(e) = self
                    .destination
                    .post::<serde_json::Value>(
                        &format!("projects/{dest}/images/metadata"),
                        &[("imageIds", csv)],
                        Some(&body),
                        Retry::Idempotent,
                    )
                    .await
                {
                    summary.failures.push(failure(project.id, None, "metadata", &e));
                }
            }
        }
        let state = self.journal.projects.entry(project.id).or_default();
        state.images.extend(done);
        self.journal.save()?;
        bar.inc(batch.len() as u64);
        Ok(())
    }

    /// Adds regions to images that were already there; a failed request is checked against the image before it
    /// is sent again, so no region is added twice. Returns how many were added.
    async fn add_regions(
        &self,
        project: &Project,
        dest: Uuid,
        mut regions: Vec<(Uuid, Region)>,
        summary: &mut Summary,
    ) -> usize {
        let mut added = 0;
        for attempt in 0..5 {
            if regions.is_empty() {
                break;
            }
            let mut failed = false;
            let mut left = Vec::new();
            for chunk in regions.chunks(MAX_BATCH) {
                let body = json!({ "regions": chunk.iter().map(|(img, r)| json!({
                    "imageId": img, "tagId": r.tag_id, "left": r.left, "top": r.top, "width": r.width, "height": r.height,
                })).collect::<Vec<_>>() });
                let path = format!("projects/{dest}/images/regions");
                match self.destination.post::<serde_json::Value>(&path, &[], Some(&body), Retry::OnlyThrottled).await {
                    Ok(_) => added += chunk.len(),
                    Err(e) => {
                        if attempt == 4 {
                            summary.failures.push(failure(project.id, None, "regions", &e));
                        }
                        failed = true;
                        left.extend_from_slice(chunk);
                    }
                }
            }
            if !failed {
                break;
            }
            // Which of the failed ones did land? Read the images back before trying again.
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            let ids: HashSet<Uuid> = left.iter().map(|(i, _)| *i).collect();
            let csv = ids.iter().map(Uuid::to_string).collect::<Vec<_>>().join(",");
            let now: Vec<Image> =
                match self.destination.get(&format!("projects/{dest}/images/id"), &[("imageIds", csv)]).await {
                    Ok(v) => v,
                    Err(_) => continue,
                };
            regions = left
                .into_iter()
                .filter(|(img, r)| !now.iter().any(|i| i.id == *img && i.regions().iter().any(|h| h.same_as(r))))
                .collect();
        }
        added
    }

    /// Trains the destination project and waits for the iteration to finish.
    async fn train(&self, project: &Project, dest: Uuid, summary: &mut Summary) {
        let started: Result<serde_json::Value> =
            self.destination.post(&format!("projects/{dest}/train"), &[], None, Retry::OnlyThrottled).await;
        let iteration = match started {
            Ok(it) => it,
            Err(e) => {
                summary.failures.push(failure(project.id, None, "train", &e));
                summary.trained.insert(project.name.clone(), "NotStarted".into());
                return;
            }
        };
        let Some(id) = iteration.get("id").and_then(|v| v.as_str()).map(String::from) else {
            summary.trained.insert(project.name.clone(), "Unknown".into());
            return;
        };
        let bar = self.bar(100, &format!("training {}", project.name));
        let status = loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let it: serde_json::Value =
                match self.destination.get(&format!("projects/{dest}/iterations/{id}"), &[]).await {
                    Ok(v) => v,
                    Err(e) => {
                        summary.failures.push(failure(project.id, None, "train", &e));
                        break "Unknown".to_string();
                    }
                };
            if let Some(p) = it.get("trainingProgress").and_then(|v| v.as_f64()) {
                bar.set_position((p * 100.0).clamp(0.0, 100.0) as u64);
            }
            if let Some(s @ ("Completed" | "Failed")) = it.get("status").and_then(|v| v.as_str()) {
                break s.to_string();
            }
        };
        bar.finish_and_clear();
        println!("{}: training {}", project.name, status.to_lowercase());
        summary.trained.insert(project.name.clone(), status);
    }

    fn bar(&self, len: u64, name: &str) -> ProgressBar {
        if !self.options.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len).with_message(name.to_string());
        bar.set_style(
            ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    }
}

/// A source image's tags and regions in destination ids. Tags that only come from regions are not sent as
/// image tags (the service lists a region's tag on its image by itself).
struct Wanted {
    tags: Vec<Uuid>,
    regions: Vec<Region>,
}

impl Wanted {
    fn of(image: &Image, tags: &BTreeMap<Uuid, Uuid>) -> Self {
        let region_tags: HashSet<Uuid> = image.regions().iter().map(|r| r.tag_id).collect();
        let tag_ids: Vec<Uuid> = image
            .tag_ids()
            .into_iter()
            .filter(|t| !region_tags.contains(t))
            .filter_map(|t| tags.get(&t).copied())
            .collect();
        let regions =
            image.regions().iter().filter_map(|r| tags.get(&r.tag_id).map(|t| Region { tag_id: *t, ..*r })).collect();
        Self { tags: tag_ids, regions }
    }
}

fn failure(project: Uuid, image: Option<Uuid>, stage: &str, e: &anyhow::Error) -> Failure {
    Failure { project, image, stage: stage.into(), reason: format!("{e:#}") }
}

/// The source projects named by id or name (all when none is named); an unknown name is an error.
fn select(all: &[Project], wanted: &[String]) -> Result<Vec<Project>> {
    if wanted.is_empty() {
        return Ok(all.to_vec());
    }
    let mut out: Vec<Project> = Vec::new();
    for w in wanted {
        let found: Vec<&Project> =
            all.iter().filter(|p| Uuid::parse_str(w.trim()).is_ok_and(|id| id == p.id) || p.name == w.trim()).collect();
        if found.is_empty() {
            return Err(anyhow!("the source has no project '{w}'"));
        }
        for p in found {
            if !out.iter().any(|o| o.id == p.id) {
                out.push(p.clone());
            }
        }
    }
    Ok(out)
}

/// The destination domain for a project: its own when the destination has it, otherwise the destination's
/// General domain of the same type (noted in the summary).
fn map_domain(project: &Project, domains: &[Domain], source_domains: &[Domain], summary: &mut Summary) -> Option<Uuid> {
    let id = project.settings.domain_id?;
    if domains.iter().any(|d| d.id == id) {
        return Some(id);
    }
    let kind =
        source_domains.iter().find(|d| d.id == id).map(|d| d.kind.as_str()).unwrap_or(
            if project.settings.classification_type.is_some() { "Classification" } else { "ObjectDetection" },
        );
    let fallback = domains
        .iter()
        .filter(|d| d.kind == kind)
        .find(|d| d.name == "General")
        .or_else(|| domains.iter().find(|d| d.kind == kind))?;
    summary.notes.push(format!(
        "Project '{}': domain {id} is not served here; it uses '{}' ({}) instead.",
        project.name, fallback.name, fallback.id
    ));
    Some(fallback.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(tags: &[Uuid], regions: &[Region]) -> Image {
        serde_json::from_value(json!({
            "id": Uuid::new_v4(),
            "tags": tags.iter().map(|t| json!({"tagId": t})).collect::<Vec<_>>(),
            "regions": regions,
        }))
        .expect("image")
    }

    #[test]
    fn region_tags_are_not_sent_as_image_tags_and_ids_are_mapped() {
        let (a, b, neg) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let map: BTreeMap<Uuid, Uuid> = [a, b, neg].iter().map(|t| (*t, Uuid::new_v4())).collect();
        let r = Region { tag_id: a, left: 0.1, top: 0.2, width: 0.3, height: 0.4 };
        let w = Wanted::of(&image(&[a, neg], &[r]), &map);
        assert_eq!(w.tags, vec![map[&neg]]);
        assert_eq!(w.regions, vec![Region { tag_id: map[&a], ..r }]);
        let w = Wanted::of(&image(&[a, b], &[]), &map);
        assert_eq!(w.tags, vec![map[&a], map[&b]]);
    }

    #[test]
    fn projects_are_selected_by_id_or_name() {
        let p = |name: &str| Project {
            id: Uuid::new_v4(),
            name: name.into(),
            description: String::new(),
            settings: Default::default(),
        };
        let all = vec![p("cats"), p("dogs")];
        assert_eq!(select(&all, &[]).expect("all").len(), 2);
        let by_id = select(&all, &[all[1].id.to_string()]).expect("id");
        assert_eq!(by_id[0].name, "dogs");
        assert_eq!(select(&all, &["cats".into(), "cats".into()]).expect("name").len(), 1);
        assert!(select(&all, &["birds".into()]).is_err());
    }

    #[test]
    fn unknown_domains_fall_back_to_general_of_the_same_type() {
        let d = |name: &str, kind: &str| Domain { id: Uuid::new_v4(), name: name.into(), kind: kind.into() };
        let here = vec![d("General", "Classification"), d("Food", "Classification"), d("General", "ObjectDetection")];
        let mut summary = Summary::default();
        let mut project =
            Project { id: Uuid::new_v4(), name: "p".into(), description: String::new(), settings: Default::default() };
        project.settings.domain_id = Some(here[1].id);
        assert_eq!(map_domain(&project, &here, &[], &mut summary), Some(here[1].id));
        let foreign = d("Logo", "ObjectDetection");
        project.settings.domain_id = Some(foreign.id);
        assert_eq!(map_domain(&project, &here, &[foreign], &mut summary), Some(here[2].id));
        assert_eq!(summary.notes.len(), 1);
    }
}
