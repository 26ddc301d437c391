//! Model export (ExportIteration / GetExports). Each request is an `export` job on the durable queue (so it
//! survives a restart and a killed worker); the job writes the package under the iteration's blobs, where it
//! lives and goes with the iteration. GetExports reads the jobs back as the hosted service's `Export` objects,
//! the latest per platform and flavor.
//!
//! What Argus exports today: classifiers (Multiclass and Multilabel) and object detectors of compact domains as
//! ONNX, FP32 (flavor none, `ONNX10`, `ONNX12`) or with FP16 weights (`OnnxFloat16`), and for OpenVINO (which
//! reads the same ONNX model directly: the package is the FP32 ONNX one, its README saying how OpenVINO loads
//! it), and as a DockerFile package (Linux): a Dockerfile, this server's own executable and the model folder that
//! `argus serve-model` serves. The other platforms answer `BadRequestExportValidationFailed` naming what is
//! supported.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use sha2::Digest;
use uuid::Uuid;

use crate::model::IterationStatus;

use super::package::{zip_files, zip_package, PackageFile};
use super::served::{ModelManifest, MODEL_FOLDER_FORMAT};
use super::training::{iteration_model_key, snapshot_of};
use super::{store_err, Argus, UrlContext};
use crate::compute::{OnnxInterface, Precision};
use crate::domains::find_domain;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::jobs::{ExportJob, Job, JobHandler, JobSpec, JobStatus, Progress};
use crate::model::{Export, ExportStatus};

pub use crate::jobs::EXPORT_JOB;

/// Version of the package format; packages from an older exporter report `newerVersionAvailable`.
pub const EXPORTER_VERSION: u32 = 1;

const PLATFORMS: &[&str] = &["CoreML", "TensorFlow", "DockerFile", "ONNX", "VAIDK", "OpenVino"];

fn scope(project: Uuid, iteration: Uuid) -> String {
    format!("{project}/{iteration}")
}

fn package_key(project: Uuid, iteration: Uuid, platform: &str, flavor: Option<&str>) -> String {
    format!("projects/{project}/iterations/{iteration}/exports/{platform}-{}.zip", flavor.unwrap_or("default"))
}

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorCode::BadRequestExportValidationFailed, message)
}

/// The canonical platform and flavor of a request, and the precision it asks for.
fn parse_target(platform: Option<&str>, flavor: Option<&str>) -> ApiResult<(String, Option<String>, Precision)> {
    let platform = platform
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::new(ErrorCode::BadRequest, "platform is required (ONNX is what Argus exports)."))?;
    let Some(canon) = PLATFORMS.iter().find(|p| p.eq_ignore_ascii_case(platform)) else {
        return Err(ApiError::new(
            ErrorCode::BadRequestExportValidationFailed,
            format!("Unknown export platform '{platform}'; Argus exports to ONNX, OpenVino and DockerFile."),
        ));
    };
    let flavor = flavor.map(str::trim).filter(|f| !f.is_empty());
    let (flavor, precision) = match (*canon, flavor.map(str::to_ascii_lowercase).as_deref()) {
        ("ONNX" | "OpenVino", None) => (None, Precision::Float32),
        ("ONNX", Some("onnx10")) => (Some("ONNX10"), Precision::Float32),
        ("ONNX", Some("onnx12")) => (Some("ONNX12"), Precision::Float32),
        ("ONNX", Some("onnxfloat16")) => (Some("OnnxFloat16"), Precision::Float16),
        ("ONNX", Some(_)) => {
            return Err(invalid(format!(
                "ONNX exports come in flavors ONNX10, ONNX12 (FP32) and OnnxFloat16, not '{}'.",
                flavor.unwrap_or_default()
            )))
        }
        ("OpenVino", Some(_)) => {
            return Err(invalid(format!("OpenVino exports take no flavor, not '{}'.", flavor.unwrap_or_default())))
        }
        ("DockerFile", None) => (None, Precision::Float32),
        ("DockerFile", Some("linux")) => (Some("Linux"), Precision::Float32),
        ("DockerFile", Some(_)) => {
            return Err(invalid(format!(
                "DockerFile exports come in the Linux flavor (x86-64, the architecture of this server), not '{}'.",
                flavor.unwrap_or_default()
            )))
        }
        _ => {
            return Err(invalid(format!(
                "Argus does not export to {canon} yet; it exports classifiers and detectors to ONNX (flavors ONNX10, \
                 ONNX12, OnnxFloat16), OpenVino and DockerFile (Linux)."
            )))
        }
    };
    Ok((canon.to_string(), flavor.map(str::to_string), precision))
}

impl Argus {
    /// ExportIteration: validates and queues an export of a trained iteration.
    pub async fn export_iteration(
        &self,
        project: Uuid,
        iteration: Uuid,
        platform: Option<&str>,
        flavor: Option<&str>,
    ) -> ApiResult<Export> {
        self.project(project).await?;
        let (it, _) = self.iteration_record(project, iteration).await?;
        if it.status == IterationStatus::Training {
            return Err(ApiError::new(
                ErrorCode::BadRequestExportWhileTraining,
                format!("Iteration {iteration} is still training; export it once it is Completed."),
            ));
        }
        if it.status != IterationStatus::Completed {
            return Err(ApiError::new(
                ErrorCode::BadRequestIterationIsNotTrained,
                format!("Iteration {iteration} did not finish training ({}); it cannot be exported.", it.status),
            ));
        }
        let (platform, flavor, _) = parse_target(platform, flavor)?;
        let domain = it.domain_id.and_then(find_domain);
        if !domain.is_some_and(|d| d.exportable) {
            return Err(invalid(format!(
                "Iteration {iteration} was trained on the domain '{}', which is not exportable; train on a compact \
                 domain to export.",
                domain.map(|d| d.name).unwrap_or("unknown")
            )));
        }
        let scope = scope(project, iteration);
        let jobs = self.jobs.list_jobs(EXPORT_JOB, &scope).await.map_err(store_err)?;
        let same =
            |j: &Job| matches!(JobSpec::of(j), Ok(JobSpec::Export(p)) if p.platform == platform && p.flavor == flavor);
        if jobs.iter().any(|j| same(j) && matches!(j.status, JobStatus::Queued | JobStatus::Running)) {
            return Err(ApiError::new(
                ErrorCode::BadRequestExportAlreadyInProgress,
                format!("An export to {platform} ({}) is already in progress.", flavor.as_deref().unwrap_or("default")),
            ));
        }
        let spec = JobSpec::Export(ExportJob {
            project,
            iteration,
            platform: platform.clone(),
            flavor: flavor.clone(),
            exporter_version: EXPORTER_VERSION,
        });
        self.jobs.enqueue(spec.to_new_job(scope, 3)).await.map_err(store_err)?;
        tracing::info!(project = %project, iteration = %iteration, platform = %platform, flavor = ?flavor, "export queued");
        Ok(Export {
            platform,
            status: ExportStatus::Exporting,
            download_uri: None,
            flavor,
            newer_version_available: false,
        })
    }

    /// The latest export job per platform and flavor of an iteration, in the order they were first asked for.
    async fn latest_exports(&self, project: Uuid, iteration: Uuid) -> ApiResult<Vec<(ExportJob, Job)>> {
        let jobs = self.jobs.list_jobs(EXPORT_JOB, &scope(project, iteration)).await.map_err(store_err)?;
        let mut order: Vec<(String, Option<String>)> = Vec::new();
        let mut latest: HashMap<(String, Option<String>), (ExportJob, Job)> = HashMap::new();
        for job in jobs {
            let Ok(JobSpec::Export(p)) = JobSpec::of(&job) else { continue };
            let target = (p.platform.clone(), p.flavor.clone());
            if !latest.contains_key(&target) {
                order.push(target.clone());
            }
            latest.insert(target, (p, job));
        }
        Ok(order.into_iter().filter_map(|t| latest.remove(&t)).collect())
    }

    /// The platform and flavor of every export of an iteration whose latest run finished (`Done`), in the order
    /// they were first asked for: what a project export carries over for the importing server to rebuild.
    pub(super) async fn done_export_targets(
        &self,
        project: Uuid,
        iteration: Uuid,
    ) -> ApiResult<Vec<(String, Option<String>)>> {
        Ok(self
            .latest_exports(project, iteration)
            .await?
            .into_iter()
            .filter(|(_, job)| job.status == JobStatus::Completed)
            .map(|(p, _)| (p.platform, p.flavor))
            .collect())
    }

    /// GetExports: the latest export per platform and flavor, in the order they were first asked for.
    pub async fn exports(&self, ctx: &UrlContext, project: Uuid, iteration: Uuid) -> ApiResult<Vec<Export>> {
        self.project(project).await?;
        self.iteration_record(project, iteration).await?;
        Ok(self
            .latest_exports(project, iteration)
            .await?
            .into_iter()
            .map(|(p, job)| {
                let (status, download_uri) = match job.status {
                    JobStatus::Queued | JobStatus::Running => (ExportStatus::Exporting, None),
                    JobStatus::Failed => (ExportStatus::Failed, None),
                    JobStatus::Completed => (
                        ExportStatus::Done,
                        Some(self.signed_url(ctx, &package_key(project, iteration, &p.platform, p.flavor.as_deref()))),
                    ),
                };
                Export {
                    platform: p.platform,
                    status,
                    download_uri,
                    flavor: p.flavor,
                    newer_version_available: p.exporter_version < EXPORTER_VERSION,
                }
            })
            .collect())
    }

    /// Writes one export package (called by the job handler); returns its blob key.
    async fn run_export(&self, p: &ExportJob, progress: &Progress) -> ApiResult<String> {
        let (it, snap) = self.iteration_record(p.project, p.iteration).await?;
        let snap = snapshot_of(snap)?;
        if p.platform == "DockerFile" {
            let key = self.docker_package(p, &it, &snap, progress).await?;
            tracing::info!(project = %p.project, iteration = %p.iteration, key = %key, "DockerFile export written");
            return Ok(key);
        }
        let (_, _, precision) = parse_target(Some(&p.platform), p.flavor.as_deref())?;
        let detection = snap.is_detection();
        let stored = self.trained_model(p, detection).await?;
        let labels = snap.output_names();
        progress.set(0.1, "writing the ONNX graph");
        let engine = self.models.engine();
        let onnx = tokio::task::spawn_blocking(move || engine.export_onnx(&stored, detection, precision))
            .await
            .map_err(ApiError::internal)??;
        let (model, shape) = (onnx.bytes, onnx.interface);
        progress.set(0.8, "packaging");
        let domain = it.domain_id.and_then(find_domain);
        let sha1 = hex::encode(sha1_digest(&model));
        let exported = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let manifest = serde_json::json!({
            "DomainType": shape.domain_type(),
            "Platform": p.platform,
            "Flavor": p.flavor.clone().unwrap_or_default(),
            "ExporterVersion": EXPORTER_VERSION.to_string(),
            "ExportedDate": exported,
            "IterationId": p.iteration,
            "ModelFileName": "model.onnx",
            "LabelFileName": "labels.txt",
            "MetadataPropsFileName": "metadata_properties.json",
            "ModelFileSHA1": sha1,
            "SchemaVersion": "1.0",
        });
        let mut metadata = shape.preprocessing();
        metadata.extend(
            serde_json::json!({
                "CustomVision.Metadata.AdditionalModelInfo": "",
                "CustomVision.Metadata.Version": "1.0",
                "Image.BitmapPixelFormat": "Rgb8",
                "Image.ColorSpaceGamma": "SRGB",
                "Image.NominalPixelRange": "Normalized_0_255",
                "Domain": domain.map(|d| d.name).unwrap_or_default(),
                "Precision": if precision == Precision::Float16 { "FP16 weights, FP32 compute" } else { "FP32" },
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
        let readme = package_readme(shape, precision, &labels, p.platform == "OpenVino");
        let files = [
            ("model.onnx", model),
            ("labels.txt", labels.iter().map(|l| format!("{l}\n")).collect::<String>().into_bytes()),
            ("cvexport.manifest", serde_json::to_vec_pretty(&manifest).map_err(ApiError::internal)?),
            ("metadata_properties.json", serde_json::to_vec_pretty(&metadata).map_err(ApiError::internal)?),
            ("predict.py", PREDICT_PY.as_bytes().to_vec()),
            ("README.md", readme.into_bytes()),
        ];
        let zip = zip_package(&files).map_err(ApiError::internal)?;
        let key = package_key(p.project, p.iteration, &p.platform, p.flavor.as_deref());
        self.blobs.put(&key, Bytes::from(zip)).await.map_err(store_err)?;
        tracing::info!(project = %p.project, iteration = %p.iteration, platform = %p.platform, key = %key, "export written");
        Ok(key)
    }
}

impl Argus {
    /// The stored head (classifier or detector) of the iteration an export job exports.
    async fn trained_model(&self, p: &ExportJob, detection: bool) -> ApiResult<Bytes> {
        let stored =
            self.blobs.get(&iteration_model_key(p.project, p.iteration, detection)).await.map_err(store_err)?;
        stored.ok_or_else(|| {
            ApiError::new(ErrorCode::ErrorExporterInvalidClassifier, "The model of this iteration is missing.")
        })
    }

    /// Writes a DockerFile package and returns its blob key: a Dockerfile, this server's own executable and a
    /// model folder (`model.json`, the head, the backbone weights it runs on) that `argus serve-model` serves
    /// with no store.
    async fn docker_package(
        &self,
        p: &ExportJob,
        it: &crate::model::Iteration,
        snap: &super::training::Snapshot,
        progress: &Progress,
    ) -> ApiResult<String> {
        let detection = snap.is_detection();
        let head_bytes = self.trained_model(p, detection).await?;
        let (weights_file, weights_path) = self.models.engine().backbone_weights(&head_bytes, detection)?;
        let exe = std::env::current_exe()
            .map_err(|e| ApiError::new(ErrorCode::ErrorExporterInvalidFeaturizer, format!("export failed: {e}")))?;
        let manifest = ModelManifest {
            format: MODEL_FOLDER_FORMAT,
            project: p.project,
            iteration: p.iteration,
            iteration_name: it.name.clone(),
            publish_name: it.publish_name.clone(),
            detection,
            multilabel: snap.is_multilabel(),
            domain: it.domain_id,
            tags: snap.tags().to_vec(),
            head: "head.safetensors".into(),
            weights: "weights".into(),
        };
        let readme = docker_readme(&manifest, &weights_file);
        let files = vec![
            PackageFile::new("Dockerfile", DOCKERFILE.as_bytes().to_vec()),
            PackageFile::new("README.md", readme.into_bytes()),
            PackageFile { executable: true, ..PackageFile::copy_of("argus", exe) },
            PackageFile::new("model/model.json", serde_json::to_vec_pretty(&manifest).map_err(ApiError::internal)?),
            PackageFile::new("model/head.safetensors", head_bytes.to_vec()),
            PackageFile::copy_of(format!("model/weights/{weights_file}"), weights_path),
        ];
        progress.set(0.2, "packaging");
        // The package (the size of the executable) goes through a temporary file, streamed both ways.
        let package = tokio::task::spawn_blocking(move || -> std::io::Result<tempfile::NamedTempFile> {
            let tmp = tempfile::NamedTempFile::new()?;
            let file = zip_files(tmp.reopen()?, &files)?;
            file.sync_all()?;
            Ok(tmp)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::new(ErrorCode::ErrorExporterInvalidFeaturizer, format!("export failed: {e}")))?;
        progress.set(0.7, "storing the package");
        let key = package_key(p.project, p.iteration, &p.platform, p.flavor.as_deref());
        self.blobs.put_file(&key, package.path()).await.map_err(store_err)?;
        Ok(key)
    }
}

/// The package's Dockerfile: this server's executable serving the model folder, port 80, as the hosted
/// service's containers do.
const DOCKERFILE: &str =
    "# Argus serving one exported model (`argus serve-model`): the hosted Custom Vision container's routes\n\
# (POST /image, POST /url, /{project}/classify|detect/iterations/{name}/image|url) and the Prediction API's.\n\
#   docker build -t my-model . && docker run -p 8080:80 my-model\n\
FROM debian:bookworm-slim\n\
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*\n\
COPY argus /usr/local/bin/argus\n\
COPY model /model\n\
EXPOSE 80\n\
ENTRYPOINT [\"argus\", \"serve-model\", \"--model\", \"/model\", \"--bind\", \"0.0.0.0:80\"]\n";

fn docker_readme(m: &ModelManifest, weights: &str) -> String {
    let kind = if m.detection { "detect" } else { "classify" };
    format!(
        "# Argus model container\n\n\
         Iteration `{}` ({}) of project `{}`, {} tags, served by Argus itself: `argus serve-model --model model` \
         answers exactly as the server that trained it (same code, same weights: `model/head.safetensors` on \
         `model/weights/{weights}`, EfficientNet-Lite weights under Apache-2.0).\n\n\
         ```sh\ndocker build -t argus-model . && docker run -p 8080:80 argus-model\n\
         curl -X POST --data-binary @photo.jpg http://localhost:8080/image\n```\n\n\
         Without Docker: `./argus serve-model --model model --bind 127.0.0.1:8080` (Linux x86-64).\n\n\
         Routes: `POST /image` (the image as the body), `POST /url` (`{{\"url\": \"…\"}}`), \
         `POST /{{project}}/{kind}/iterations/{{name}}/image|url`, and the Prediction API's \
         `POST /customvision/v3.0/prediction/{{project}}/{kind}/iterations/{{name}}/image[/nostore]` (and `/url`); \
         `GET /healthz`. Answers are the Prediction API's `ImagePrediction` JSON; nothing is stored.\n",
        m.iteration,
        m.iteration_name,
        m.project,
        m.tags.len(),
    )
}

/// The hosted manifest's `ModelFileSHA1` is a SHA-1 of the model file.
fn sha1_digest(bytes: &[u8]) -> Vec<u8> {
    sha1::Sha1::digest(bytes).to_vec()
}

/// The package's `predict.py`: the server's preprocessing (EXIF orientation, centre crop of 224/256 of the
/// shorter side, triangle-filter resize) with numpy, Pillow and onnxruntime.
const PREDICT_PY: &str = include_str!("export_predict.py");

/// What the package's manifest and metadata say about the graph.
impl OnnxInterface {
    /// The manifest's `DomainType`.
    fn domain_type(self) -> &'static str {
        match self {
            Self::Classifier { multilabel: true, .. } => "Classification (Multilabel)",
            Self::Classifier { multilabel: false, .. } => "Classification (Multiclass)",
            Self::Detector { .. } => "ObjectDetection",
        }
    }

    /// The preprocessing and postprocessing entries of `metadata_properties.json`.
    fn preprocessing(self) -> serde_json::Map<String, serde_json::Value> {
        let value = match self {
            Self::Classifier { size, multilabel, .. } => serde_json::json!({
                "CustomVision.Postprocess.Method": if multilabel { "Sigmoid" } else { "Softmax" },
                "CustomVision.Preprocess.CropMethod": "CenterCrop224of256",
                "CustomVision.Preprocess.CropHeight": size,
                "CustomVision.Preprocess.CropWidth": size,
                "CustomVision.Preprocess.NormalizationMethod": "(x - 127) / 128, inside the graph",
                "CustomVision.Preprocess.ResizeMethod": "Triangle (bilinear) filter",
                "CustomVision.Preprocess.TargetHeight": size,
                "CustomVision.Preprocess.TargetWidth": size,
            }),
            Self::Detector { size, mirror, nms_iou, min_score, max_detections, .. } => serde_json::json!({
                "CustomVision.Postprocess.Method": "NMS inside the graph",
                "CustomVision.Postprocess.NmsIouThreshold": nms_iou,
                "CustomVision.Postprocess.MinimumScore": min_score,
                "CustomVision.Postprocess.MaxDetections": max_detections,
                "CustomVision.Postprocess.MirrorAverage": mirror,
                "CustomVision.Preprocess.CropMethod": "None (the whole image, stretched)",
                "CustomVision.Preprocess.NormalizationMethod": "(x - 127) / 128, inside the graph",
                "CustomVision.Preprocess.ResizeMethod": "Stretch, triangle (bilinear) filter",
                "CustomVision.Preprocess.TargetHeight": size,
                "CustomVision.Preprocess.TargetWidth": size,
            }),
        };
        value.as_object().cloned().unwrap_or_default()
    }
}

fn package_readme(shape: OnnxInterface, precision: Precision, labels: &[String], openvino: bool) -> String {
    let weights = if precision == Precision::Float16 { "FP16 (computed in FP32)" } else { "FP32" };
    let n = labels.len();
    let mut readme = match shape {
        OnnxInterface::Classifier { input, output, size, multilabel } => format!(
            "# Argus classifier export\n\n\
             `model.onnx` (ONNX opset 13) classifies an image into the tags of `labels.txt` ({n} tags), as the Argus \
             server that trained it does.\n\n\
             - input `{input}`: float32 `[1, 3, {size}, {size}]`, RGB, values 0–255, channels first. The image \
             is first turned upright (EXIF orientation), then its central square of 224/256 of the shorter side is \
             resized to {size} × {size} with a triangle (bilinear) filter. Normalisation and the mirror-image average \
             happen inside the graph.\n\
             - output `{output}`: float32 `[1, {n}]`, {} in `labels.txt` order.\n\
             - weights: {weights}.\n\n\
             `python predict.py IMAGE...` (numpy, Pillow, onnxruntime) prints the probabilities per tag.\n",
            if multilabel {
                "one independent probability per tag (sigmoid)"
            } else {
                "probabilities summing to 1 (softmax)"
            },
        ),
        OnnxInterface::Detector { input, boxes, scores, classes, size, mirror, nms_iou, min_score, max_detections } => {
            format!(
                "# Argus object detector export\n\n\
             `model.onnx` (ONNX opset 13) finds the objects of the tags of `labels.txt` ({n} tags) in an image, as the \
             Argus server that trained it does: the whole detector is in the graph, suppression included.\n\n\
             - input `{input}`: float32 `[1, 3, {size}, {size}]`, RGB, values 0–255, channels first. The \
             image is first turned upright (EXIF orientation), then the whole image is resized to {size} × {size} \
             (stretched, not cropped) with a triangle (bilinear) filter. Normalisation{} happens inside the graph.\n\
             - outputs: `{boxes}` float32 `[1, N, 4]` (x1, y1, x2, y2, each in [0, 1] of the image's width \
             or height), `{scores}` float32 `[1, N]`, `{classes}` int64 `[1, N]` (indices into \
             `labels.txt`); most confident first, every box scored at least {min_score}, at most {max_detections}, \
             per-tag non-maximum suppression at IoU {nms_iou}.\n\
             - weights: {weights}.\n\n\
             `python predict.py IMAGE...` (numpy, Pillow, onnxruntime) prints the boxes in the Prediction API's \
             shape (`boundingBox` with left, top, width, height).\n",
                if mirror { " and the mirror-image average" } else { "" },
            )
        }
    };
    if openvino {
        readme.push_str(
            "\n## OpenVINO\n\nOpenVINO reads `model.onnx` directly (no conversion step):\n\n```python\n\
             import openvino as ov\n\
             # f32: the CPU plugin otherwise computes in bf16 / fp16 where the CPU has it\n\
             model = ov.Core().compile_model(\"model.onnx\", \"CPU\", {\"INFERENCE_PRECISION_HINT\": \"f32\"})\n\
             outputs = model(tensor)  # tensor: the input described above\n```\n",
        );
    }
    readme
}

/// Runs `export` jobs.
pub struct ExportJobs(pub Argus);

#[async_trait]
impl JobHandler for ExportJobs {
    fn kind(&self) -> &'static str {
        EXPORT_JOB
    }

    async fn run(&self, job: &Job, progress: Progress) -> Result<serde_json::Value, (String, bool)> {
        let JobSpec::Export(p) = JobSpec::of(job).map_err(|e| (e, false))? else {
            return Err((format!("job {} is not an export", job.id), false));
        };
        match self.0.run_export(&p, &progress).await {
            Ok(key) => Ok(serde_json::json!({ "key": key })),
            Err(e) => Err((e.message, false)),
        }
    }

    async fn abandoned(&self, job: &Job, reason: &str) {
        tracing::warn!(job = %job.id, reason, "export abandoned");
    }
}
