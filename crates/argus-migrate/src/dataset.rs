//! `argus dataset export|import`: a project of any Custom Vision Training endpoint (Argus or Azure) to and from
//! COCO, YOLO or Pascal VOC ([`argus_datasets`]), through the public Training API.
//!
//! Export lists every tagged and untagged image, downloads the originals (8 at a time) into the folder or zip and
//! writes the annotations last; boxes are converted with the image's width and height as the service reports
//! them. Import reads the dataset, finds the project by id or name (or creates it: object detection when the
//! dataset has boxes, otherwise classification, Multilabel when an image has several tags), creates the tags it
//! lacks (a category named `Negative` becomes the Negative tag) and uploads the images with their tags and
//! regions in batches of at most 64; an image the project already holds is reported as a duplicate.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use argus_datasets::{Dataset, Files, Format, Item, Labelled, Sink};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use uuid::Uuid;

use crate::client::{Domain, Image, ImageCreateSummary, Project, Retry, Tag, TrainingApi};
use crate::customvision::{MAX_BATCH, MAX_PAGE};

/// Most raw image bytes per upload batch.
const MAX_BATCH_BYTES: usize = 24 << 20;
/// Largest original downloaded.
const MAX_IMAGE_BYTES: usize = 64 << 20;

/// Counts of an export or an import.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Images written or uploaded.
    pub images: usize,
    /// Boxes written or uploaded.
    pub boxes: usize,
    /// Tags (categories) written, or created at the destination.
    pub tags: usize,
    /// Images the project already held (import).
    pub duplicates: usize,
    /// Images that failed, with the reason.
    pub failed: Vec<String>,
}

fn bar(len: u64, msg: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len).with_message(msg.to_string());
    b.set_style(
        ProgressStyle::with_template("{msg:>16} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

/// A project by id or exact name.
pub async fn find_project(api: &TrainingApi, wanted: &str) -> Result<Option<Project>> {
    let all: Vec<Project> = api.get("projects", &[]).await.context("listing projects")?;
    let id = Uuid::parse_str(wanted.trim()).ok();
    Ok(all.into_iter().find(|p| Some(p.id) == id || p.name == wanted.trim()))
}

/// Every tagged and untagged image of a project.
pub async fn all_images(api: &TrainingApi, project: Uuid) -> Result<Vec<Image>> {
    let mut out = Vec::new();
    for listing in ["tagged", "untagged"] {
        let mut skip = 0usize;
        loop {
            let query = [("take", MAX_PAGE.to_string()), ("skip", skip.to_string())];
            let page: Vec<Image> = api.get(&format!("projects/{project}/images/{listing}"), &query).await?;
            let n = page.len();
            out.extend(page);
            if n < MAX_PAGE {
                break;
            }
            skip += n;
        }
    }
    Ok(out)
}

async fn is_detection(api: &TrainingApi, project: &Project) -> Result<bool> {
    let domains: Vec<Domain> = api.get("domains", &[]).await.context("listing domains")?;
    Ok(match project.settings.domain_id.and_then(|d| domains.iter().find(|x| x.id == d)) {
        Some(d) => d.kind == "ObjectDetection",
        None => project.settings.classification_type.is_none(),
    })
}

/// Exports a project into `out` (a folder, or a zip when it ends in `.zip`).
pub async fn export(api: &TrainingApi, project: &str, format: Format, out: &Path, progress: bool) -> Result<Counts> {
    let project = find_project(api, project).await?.ok_or_else(|| anyhow!("no project '{project}'"))?;
    let tags: Vec<Tag> = api.get(&format!("projects/{}/tags", project.id), &[]).await?;
    let index: BTreeMap<Uuid, usize> = tags.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
    let mut dataset = Dataset {
        detection: is_detection(api, &project).await?,
        categories: tags.iter().map(|t| t.name.clone()).collect(),
        items: Vec::new(),
    };
    let images = all_images(api, project.id).await?;
    let mut sink = Sink::create(out)?;
    let mut counts = Counts { tags: tags.len(), ..Default::default() };
    let pb = bar(images.len() as u64, &project.name, progress);
    let mut downloads = futures::stream::iter(images.into_iter().map(|image| async move {
        let bytes = match image.original_image_uri.as_deref().filter(|u| !u.is_empty()) {
            Some(u) => api.download(u, MAX_IMAGE_BYTES).await,
            None => Err(anyhow!("no originalImageUri")),
        };
        (image, bytes)
    }))
    .buffered(8);
    while let Some((image, bytes)) = downloads.next().await {
        pb.inc(1);
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                counts.failed.push(format!("image {}: {e:#}", image.id));
                continue;
            }
        };
        let region_tags: HashSet<Uuid> = image.regions().iter().map(|r| r.tag_id).collect();
        let item = Item {
            path: format!("{}.{}", image.id, argus_datasets::extension(&bytes)),
            width: image.width,
            height: image.height,
            tags: image
                .tag_ids()
                .iter()
                .filter(|t| !region_tags.contains(t))
                .filter_map(|t| index.get(t).copied())
                .collect(),
            boxes: image
                .regions()
                .iter()
                .filter_map(|r| {
                    Some(Labelled {
                        category: *index.get(&r.tag_id)?,
                        left: r.left,
                        top: r.top,
                        width: r.width,
                        height: r.height,
                        ..Default::default()
                    })
                })
                .collect(),
        };
        for p in argus_datasets::image_paths(format, &dataset, &item) {
            sink.put(&p, &bytes)?;
        }
        counts.images += 1;
        counts.boxes += item.boxes.len();
        dataset.items.push(item);
    }
    argus_datasets::write_annotations(format, &dataset, &mut sink)?;
    sink.finish()?;
    pb.finish_and_clear();
    Ok(counts)
}

/// Imports a dataset into the project named `project` (by id or name), creating it when no project has that name.
pub async fn import(
    api: &TrainingApi,
    format: Format,
    path: &Path,
    project: &str,
    progress: bool,
) -> Result<(Project, Counts)> {
    let path = path.to_path_buf();
    let (dataset, mut files) = tokio::task::spawn_blocking(move || -> Result<(Dataset, Files)> {
        let mut files = Files::open(&path)?;
        let d = argus_datasets::read(format, &mut files)?;
        Ok((d, files))
    })
    .await??;
    let mut counts = Counts::default();
    let target = match find_project(api, project).await? {
        Some(p) => {
            if is_detection(api, &p).await? != dataset.detection {
                return Err(anyhow!(
                    "project '{}' is {}, the dataset is {}",
                    p.name,
                    kind(!dataset.detection),
                    kind(dataset.detection)
                ));
            }
            p
        }
        None => {
            let mut query = vec![("name", project.trim().to_string())];
            if dataset.detection {
                let domains: Vec<Domain> = api.get("domains", &[]).await?;
                let od = domains
                    .iter()
                    .find(|d| d.kind == "ObjectDetection" && d.name == "General")
                    .or_else(|| domains.iter().find(|d| d.kind == "ObjectDetection"))
                    .ok_or_else(|| anyhow!("the endpoint has no object detection domain"))?;
                query.push(("domainId", od.id.to_string()));
            } else {
                let multilabel = dataset.items.iter().any(|i| i.tags.len() > 1);
                query.push(("classificationType", if multilabel { "Multilabel" } else { "Multiclass" }.to_string()));
            }
            api.post("projects", &query, None, Retry::OnlyThrottled).await.context("creating the project")?
        }
    };
    // Tags by name; the missing ones are created.
    let mut existing: Vec<Tag> = api.get(&format!("projects/{}/tags", target.id), &[]).await?;
    let mut tag_ids = Vec::with_capacity(dataset.categories.len());
    for name in &dataset.categories {
        if let Some(t) = existing.iter().find(|t| t.name == *name) {
            tag_ids.push(t.id);
            continue;
        }
        let mut query = vec![("name", name.clone())];
        if name == "Negative" {
            query.push(("type", "Negative".to_string()));
        }
        let t: Tag = api
            .post(&format!("projects/{}/tags", target.id), &query, None, Retry::OnlyThrottled)
            .await
            .with_context(|| format!("creating tag '{name}'"))?;
        tag_ids.push(t.id);
        existing.push(t);
        counts.tags += 1;
    }
    let pb = bar(dataset.items.len() as u64, &target.name, progress);
    let mut batch: Vec<serde_json::Value> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut bytes_in_batch = 0usize;
    let items = dataset.items.clone();
    for (n, item) in items.iter().enumerate() {
        let path = item.path.clone();
        let (bytes, f) = tokio::task::spawn_blocking(move || {
            let r = files.read(&path);
            (r, files)
        })
        .await?;
        files = f;
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                counts.failed.push(format!("{}: {e:#}", item.path));
                pb.inc(1);
                continue;
            }
        };
        bytes_in_batch += bytes.len();
        let regions: Vec<_> = item
            .boxes
            .iter()
            .map(|b| json!({"tagId": tag_ids[b.category], "left": b.left, "top": b.top, "width": b.width, "height": b.height}))
            .collect();
        counts.boxes += regions.len();
        batch.push(json!({
            "name": item.path.rsplit('/').next().unwrap_or(&item.path),
            "contents": STANDARD.encode(&bytes),
            "tagIds": item.tags.iter().map(|t| tag_ids[*t]).collect::<Vec<_>>(),
            "regions": regions,
        }));
        names.push(item.path.clone());
        let last = n + 1 == items.len();
        if batch.len() == MAX_BATCH || bytes_in_batch > MAX_BATCH_BYTES || last {
            upload(api, target.id, std::mem::take(&mut batch), std::mem::take(&mut names), &mut counts).await?;
            pb.set_position(n as u64 + 1);
            bytes_in_batch = 0;
        }
    }
    pb.finish_and_clear();
    Ok((target, counts))
}

fn kind(detection: bool) -> &'static str {
    if detection {
        "object detection"
    } else {
        "classification"
    }
}

async fn upload(
    api: &TrainingApi,
    project: Uuid,
    batch: Vec<serde_json::Value>,
    names: Vec<String>,
    counts: &mut Counts,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let body = json!({ "images": batch });
    let answer: ImageCreateSummary = api
        .post(&format!("projects/{project}/images/files"), &[], Some(&body), Retry::Idempotent)
        .await
        .context("uploading images")?;
    for (name, r) in names.iter().zip(&answer.images) {
        match r.status.as_str() {
            "OK" => counts.images += 1,
            "OKDuplicate" => counts.duplicates += 1,
            other => counts.failed.push(format!("{name}: {other}")),
        }
    }
    Ok(())
}
