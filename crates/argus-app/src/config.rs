//! Configuration: command-line flags > environment (`ARGUS_*`) > a TOML file > defaults. Defaults work with
//! no file at all. Keys come from `ARGUS_TRAINING_KEY` / `ARGUS_PREDICTION_KEY` (or their flags), else from the data
//! directory, where a fresh directory gets generated keys (printed once).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

/// Flags (and their environment variables) of `argus serve`.
#[derive(Debug, Clone, Args, Default)]
pub struct ServeArgs {
    /// Data directory: the SQLite database, blobs and keys. [default: ./argus-data]
    #[arg(long, env = "ARGUS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Metadata database: `sqlite://PATH` or `postgres://user:password@host:port/database` (a cluster's API nodes
    /// and workers share one). [default: sqlite://DATA_DIR/argus.db]
    #[arg(long, env = "ARGUS_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// Blob store: `file://PATH` or `s3://bucket[/prefix]` (endpoint, region and credentials from the usual
    /// `AWS_*` variables, or the `--s3-*` flags). [default: file://DATA_DIR/blobs]
    #[arg(long, env = "ARGUS_BLOBS_URL")]
    pub blobs: Option<String>,
    /// S3 endpoint for `s3://` blobs (MinIO, SeaweedFS, Ceph, R2, …). [default: AWS_ENDPOINT_URL, else AWS]
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region. [default: AWS_REGION, else us-east-1]
    #[arg(long, env = "AWS_REGION")]
    pub s3_region: Option<String>,
    /// Address buckets in the path (`endpoint/bucket/key`), as most self-hosted S3 servers need, instead of
    /// the virtual-hosted `bucket.endpoint/key`. [default: true with --s3-endpoint, false on AWS]
    #[arg(long, env = "ARGUS_S3_PATH_STYLE")]
    pub s3_path_style: Option<bool>,
    /// Address to listen on. [default: 127.0.0.1:8080]
    #[arg(long, env = "ARGUS_BIND")]
    pub bind: Option<SocketAddr>,
    /// TOML configuration file (keys: data_dir, database, blobs, s3_endpoint, s3_region, s3_path_style, bind, public_url, allow_private_urls, signed_url_ttl_secs,
    /// max_projects, log_format, models_dir, training_workers, prediction_retention_days,
    /// vision_retention_hours, max_running_vision_jobs, sam_weights, min_detection_images_per_tag, workers,
    /// max_images_per_project).
    /// [default: ./argus.toml when it exists]
    #[arg(long, env = "ARGUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Base URL clients use to reach this server, used in signed image links (default: the request's Host).
    #[arg(long, env = "ARGUS_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Let image URLs point at loopback and private networks (off by default: SSRF protection).
    #[arg(long, env = "ARGUS_ALLOW_PRIVATE_URLS")]
    pub allow_private_urls: Option<bool>,
    /// Lifetime of signed image links, in seconds. [default: 86400]
    #[arg(long, env = "ARGUS_SIGNED_URL_TTL_SECS")]
    pub signed_url_ttl_secs: Option<i64>,
    /// Projects allowed on this server. [default: 1000]
    #[arg(long, env = "ARGUS_MAX_PROJECTS")]
    pub max_projects: Option<u64>,
    /// Log format: text or json. [default: text]
    #[arg(long, env = "ARGUS_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Directory of model weights (fetched by `argus models pull`). [default: ./argus-models]
    #[arg(long, env = "ARGUS_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Training jobs run at once. [default: 1]
    #[arg(long, env = "ARGUS_TRAINING_WORKERS")]
    pub training_workers: Option<usize>,
    /// Job slots of this server: 0 serves HTTP only and leaves every job (training, export, segmentation) to
    /// `argus worker` processes on the same data directory; N > 0 is `--training-workers N`. [default: jobs run
    /// here]
    #[arg(long, env = "ARGUS_WORKERS", conflicts_with = "training_workers")]
    pub workers: Option<usize>,
    /// Secret that signs image links (at least 32 characters). Give every process serving one store the same
    /// one so that a link signed by one node opens on another; prefer the environment variable to the flag.
    /// [default: generated once, kept in the database]
    #[arg(long, env = "ARGUS_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
    /// Days stored predictions (and their images) are kept before the hourly sweep removes them. [default: 30]
    #[arg(long, env = "ARGUS_PREDICTION_RETENTION_DAYS")]
    pub prediction_retention_days: Option<i64>,
    /// Hours finished segmentation jobs (and their results) are kept. [default: 168]
    #[arg(long, env = "ARGUS_VISION_RETENTION_HOURS")]
    pub vision_retention_hours: Option<i64>,
    /// Segmentation jobs a project may have queued or running at once; more answer 429. [default: 20]
    #[arg(long, env = "ARGUS_MAX_RUNNING_VISION_JOBS")]
    pub max_running_vision_jobs: Option<u64>,
    /// Segment Anything checkpoint (safetensors: SAM ViT-B/L/H or MobileSAM) for the `sam` segmentation engine;
    /// without it segmentation uses the weight-free GrabCut engine. [default: none]
    #[arg(long, env = "ARGUS_SAM_WEIGHTS")]
    pub sam_weights: Option<PathBuf>,
    /// Images with a box of it each tag needs before a detector trains. The hosted service asks 15; a
    /// self-hosted server may ask fewer (at least 2) to try detection on small sets. [default: 15]
    #[arg(long, env = "ARGUS_MIN_DETECTION_IMAGES_PER_TAG")]
    pub min_detection_images_per_tag: Option<usize>,
    /// Images a project may hold (the hosted service's S0 tier allows 100,000). [default: 100000]
    #[arg(long, env = "ARGUS_MAX_IMAGES_PER_PROJECT")]
    pub max_images_per_project: Option<u64>,
    /// The `Training-Key` clients send; prefer the environment variable to the flag. [default: generated once,
    /// kept in the database]
    #[arg(long, env = "ARGUS_TRAINING_KEY", hide_env_values = true)]
    pub training_key: Option<String>,
    /// The `Prediction-Key` clients send; prefer the environment variable to the flag. [default: generated
    /// once, kept in the database]
    #[arg(long, env = "ARGUS_PREDICTION_KEY", hide_env_values = true)]
    pub prediction_key: Option<String>,
    /// The `Authorization: Bearer` key of the segmentation API (`/api/v1/projects/{project}/…`). [default: the
    /// training key]
    #[arg(long, env = "ARGUS_VISION_KEY", hide_env_values = true)]
    pub vision_key: Option<String>,
}

/// The TOML file's shape.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    data_dir: Option<PathBuf>,
    database: Option<String>,
    blobs: Option<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_path_style: Option<bool>,
    bind: Option<SocketAddr>,
    public_url: Option<String>,
    allow_private_urls: Option<bool>,
    signed_url_ttl_secs: Option<i64>,
    max_projects: Option<u64>,
    log_format: Option<String>,
    models_dir: Option<PathBuf>,
    training_workers: Option<usize>,
    workers: Option<usize>,
    prediction_retention_days: Option<i64>,
    vision_retention_hours: Option<i64>,
    max_running_vision_jobs: Option<u64>,
    sam_weights: Option<PathBuf>,
    min_detection_images_per_tag: Option<usize>,
    max_images_per_project: Option<u64>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Data directory (the defaults of `database` and `blobs` live in it).
    pub data_dir: PathBuf,
    /// The metadata database.
    pub database: DatabaseUrl,
    /// The blob store.
    pub blobs: BlobsUrl,
    /// Listen address.
    pub bind: SocketAddr,
    /// Public base URL.
    pub public_url: Option<String>,
    /// SSRF guard off.
    pub allow_private_urls: bool,
    /// Signed-link lifetime.
    pub signed_url_ttl_secs: i64,
    /// Project quota.
    pub max_projects: u64,
    /// `text` or `json`.
    pub log_format: String,
    /// Model weights directory.
    pub models_dir: PathBuf,
    /// Concurrent training jobs.
    pub training_workers: usize,
    /// Whether this server runs jobs itself (`workers = 0`: HTTP only, `argus worker` processes run them).
    pub run_jobs: bool,
    /// The link-signing secret, when given (otherwise the data directory's).
    pub signing_key: Option<String>,
    /// Stored-prediction retention in days.
    pub prediction_retention_days: i64,
    /// Finished segmentation job retention in hours.
    pub vision_retention_hours: i64,
    /// Per-project cap on queued/running segmentation jobs.
    pub max_running_vision_jobs: u64,
    /// Segment Anything checkpoint, when configured.
    pub sam_weights: Option<PathBuf>,
    /// Images with a box of it each tag needs before a detector trains.
    pub min_detection_images_per_tag: usize,
    /// Images a project may hold.
    pub max_images_per_project: u64,
    /// The Training key, when given (otherwise the data directory's).
    pub training_key: Option<String>,
    /// The Prediction key, when given (otherwise the data directory's).
    pub prediction_key: Option<String>,
    /// The segmentation API's bearer key, when given (otherwise the Training key).
    pub vision_key: Option<String>,
}

impl Settings {
    /// Resolves flags/env over the TOML file over defaults.
    pub fn resolve(args: &ServeArgs) -> Result<Self> {
        let file = match &args.config {
            Some(p) => Some(p.clone()),
            None => Some(PathBuf::from("argus.toml")).filter(|p| p.exists()),
        };
        let fc: FileConfig = match &file {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).with_context(|| format!("reading config file {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing config file {}", p.display()))?
            }
            None => FileConfig::default(),
        };
        let log_format = args.log_format.clone().or(fc.log_format).unwrap_or_else(|| "text".into());
        if log_format != "text" && log_format != "json" {
            anyhow::bail!("log format must be 'text' or 'json', not '{log_format}'");
        }
        let ttl = args.signed_url_ttl_secs.or(fc.signed_url_ttl_secs).unwrap_or(86_400);
        if ttl <= 0 {
            anyhow::bail!("signed_url_ttl_secs must be positive");
        }
        let retention = args.prediction_retention_days.or(fc.prediction_retention_days).unwrap_or(30);
        if retention <= 0 {
            anyhow::bail!("prediction_retention_days must be positive");
        }
        let vision_retention = args.vision_retention_hours.or(fc.vision_retention_hours).unwrap_or(24 * 7);
        if vision_retention <= 0 {
            anyhow::bail!("vision_retention_hours must be positive");
        }
        let min_detection = args
            .min_detection_images_per_tag
            .or(fc.min_detection_images_per_tag)
            .unwrap_or(argus_core::service::MIN_IMAGES_PER_TAG_DETECTION);
        let least = argus_core::service::MIN_CONFIGURABLE_IMAGES_PER_TAG_DETECTION;
        if min_detection < least {
            anyhow::bail!("min_detection_images_per_tag must be at least {least} (cross-validation needs two)");
        }
        let max_images = args
            .max_images_per_project
            .or(fc.max_images_per_project)
            .unwrap_or(argus_core::limits::MAX_IMAGES_PER_PROJECT);
        if max_images == 0 {
            anyhow::bail!("max_images_per_project must be positive");
        }
        let key = |k: &Option<String>| k.clone().filter(|k| !k.trim().is_empty());
        let signing_key = args.signing_key.clone().filter(|k| !k.is_empty());
        if signing_key.as_ref().is_some_and(|k| k.chars().count() < MIN_SIGNING_KEY_CHARS) {
            anyhow::bail!("the signing key must be at least {MIN_SIGNING_KEY_CHARS} characters");
        }
        let data_dir = args.data_dir.clone().or(fc.data_dir).unwrap_or_else(|| PathBuf::from("argus-data"));
        let database = match args.database.clone().or(fc.database).filter(|u| !u.is_empty()) {
            Some(url) => DatabaseUrl::parse(&url)?,
            None => DatabaseUrl::Sqlite(data_dir.join("argus.db")),
        };
        let s3 = S3Options {
            endpoint: args.s3_endpoint.clone().or(fc.s3_endpoint).filter(|e| !e.is_empty()),
            region: args.s3_region.clone().or(fc.s3_region).filter(|r| !r.is_empty()),
            path_style: args.s3_path_style.or(fc.s3_path_style),
        };
        let blobs = match args.blobs.clone().or(fc.blobs).filter(|u| !u.is_empty()) {
            Some(url) => BlobsUrl::parse(&url, s3)?,
            None => BlobsUrl::File(data_dir.join("blobs")),
        };
        let workers = args.workers.or(if args.training_workers.is_some() { None } else { fc.workers });
        let training_workers = args.training_workers.or(fc.training_workers);
        Ok(Self {
            min_detection_images_per_tag: min_detection,
            prediction_retention_days: retention,
            vision_retention_hours: vision_retention,
            max_running_vision_jobs: args.max_running_vision_jobs.or(fc.max_running_vision_jobs).unwrap_or(20),
            sam_weights: args.sam_weights.clone().or(fc.sam_weights).filter(|p| !p.as_os_str().is_empty()),
            data_dir,
            database,
            blobs,
            bind: args.bind.or(fc.bind).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            public_url: args.public_url.clone().or(fc.public_url),
            allow_private_urls: args.allow_private_urls.or(fc.allow_private_urls).unwrap_or(false),
            signed_url_ttl_secs: ttl,
            max_projects: args.max_projects.or(fc.max_projects).unwrap_or(argus_core::limits::DEFAULT_MAX_PROJECTS),
            log_format,
            models_dir: args.models_dir.clone().or(fc.models_dir).unwrap_or_else(|| PathBuf::from("argus-models")),
            training_workers: workers.filter(|n| *n > 0).or(training_workers).unwrap_or(1).max(1),
            run_jobs: workers != Some(0),
            signing_key,
            max_images_per_project: max_images,
            training_key: key(&args.training_key),
            prediction_key: key(&args.prediction_key),
            vision_key: key(&args.vision_key),
        })
    }
}

/// Where the metadata lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An embedded SQLite file (one machine).
    Sqlite(PathBuf),
    /// A PostgreSQL server (a cluster): the connection URL as given.
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses `sqlite://PATH` (also `sqlite:PATH`) or `postgres://…` / `postgresql://…`.
    pub fn parse(url: &str) -> Result<Self> {
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if path.is_empty() {
                anyhow::bail!("the database URL '{url}' names no file (sqlite://PATH)");
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_string()));
        }
        anyhow::bail!("unsupported database URL (use sqlite://PATH or postgres://user:password@host:port/database)")
    }

    /// The URL with any password masked, for logs.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("sqlite://{}", p.display()),
            Self::Postgres(u) => match url::Url::parse(u) {
                Ok(mut parsed) if parsed.password().is_some() => {
                    let _ = parsed.set_password(Some("***"));
                    parsed.to_string()
                }
                _ => u.clone(),
            },
        }
    }
}

/// How to reach an S3-compatible server (credentials come from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`
/// and the rest of the standard `AWS_*` environment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// Endpoint URL; AWS itself when `None`.
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Path-style addressing; `None`: on with a custom endpoint, off on AWS.
    pub path_style: Option<bool>,
}

/// Where the blobs live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobsUrl {
    /// A local directory.
    File(PathBuf),
    /// A bucket of an S3-compatible server, under a key prefix (empty: the bucket's root).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix, without leading or trailing `/`.
        prefix: String,
        /// How to reach the server.
        options: S3Options,
    },
}

impl BlobsUrl {
    /// Parses `file://PATH` (also `file:PATH`) or `s3://bucket[/prefix]`.
    pub fn parse(url: &str, options: S3Options) -> Result<Self> {
        if let Some(path) = url.strip_prefix("file://").or_else(|| url.strip_prefix("file:")) {
            if path.is_empty() {
                anyhow::bail!("the blobs URL '{url}' names no directory (file://PATH)");
            }
            return Ok(Self::File(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                anyhow::bail!("the blobs URL '{url}' names no bucket (s3://bucket[/prefix])");
            }
            return Ok(Self::S3 { bucket: bucket.to_string(), prefix: prefix.trim_matches('/').to_string(), options });
        }
        anyhow::bail!("unsupported blobs URL (use file://PATH or s3://bucket[/prefix])")
    }
}

/// Shortest signing secret accepted from the flag or the environment.
pub const MIN_SIGNING_KEY_CHARS: usize = 32;

/// The API keys and the link-signing secret (kept in the metadata store).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secrets {
    /// Training-Key.
    pub training_key: String,
    /// Prediction-Key.
    pub prediction_key: String,
    /// HMAC secret for signed links.
    pub signing_key: String,
}

fn random_key() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())[..32].to_string()
}

/// The secrets file of a data directory from before the secrets moved into the store (read, never written).
pub fn legacy_secrets(data_dir: &Path) -> Result<Option<Secrets>> {
    let path = data_dir.join("secrets.json");
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let s: Secrets = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Some(s))
}

/// The server's secrets, kept in the metadata store so that every process serving it shares them: generated
/// once (or, for a data directory from before, taken from its `secrets.json`, so the keys stay what they were).
/// Returns them and whether they were generated now (a new store).
pub async fn load_or_create_secrets(
    store: &dyn argus_core::store::MetadataStore,
    data_dir: &Path,
) -> Result<(Secrets, bool)> {
    let legacy = legacy_secrets(data_dir)?;
    let had_file = legacy.is_some();
    let candidates = legacy.unwrap_or_else(|| Secrets {
        training_key: random_key(),
        prediction_key: random_key(),
        signing_key: random_key() + &random_key(),
    });
    let mut generated = false;
    let mut stored = candidates;
    for (name, slot) in [
        ("training_key", &mut stored.training_key),
        ("prediction_key", &mut stored.prediction_key),
        ("signing_key", &mut stored.signing_key),
    ] {
        let (value, inserted) =
            store.secret_or_insert(name, slot).await.with_context(|| format!("reading the {name} secret"))?;
        generated |= inserted && !had_file;
        *slot = value;
    }
    Ok((stored, generated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_over_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("argus.toml");
        std::fs::write(&file, "bind = \"0.0.0.0:9000\"\nmax_projects = 7\n").expect("write");
        let args = ServeArgs { config: Some(file.clone()), max_projects: Some(3), ..Default::default() };
        let s = Settings::resolve(&args).expect("resolve");
        assert_eq!(s.bind.port(), 9000);
        assert_eq!(s.max_projects, 3);
        assert_eq!(s.data_dir, PathBuf::from("argus-data"));
        std::fs::write(&file, "nonsense = 1\n").expect("write");
        assert!(Settings::resolve(&args).is_err());
    }

    #[test]
    fn store_urls_default_to_the_data_directory_and_parse() {
        let s = Settings::resolve(&ServeArgs { data_dir: Some("d".into()), ..Default::default() }).expect("resolve");
        assert_eq!(s.database, DatabaseUrl::Sqlite(PathBuf::from("d/argus.db")));
        assert_eq!(s.blobs, BlobsUrl::File(PathBuf::from("d/blobs")));
        let args = ServeArgs {
            database: Some("postgres://argus:hunter2@db:5432/argus".into()),
            blobs: Some("s3://bucket/some/prefix/".into()),
            s3_endpoint: Some("http://s3:8333".into()),
            ..Default::default()
        };
        let s = Settings::resolve(&args).expect("resolve");
        assert_eq!(s.database.redacted(), "postgres://argus:***@db:5432/argus");
        match s.blobs {
            BlobsUrl::S3 { bucket, prefix, options } => {
                assert_eq!((bucket.as_str(), prefix.as_str()), ("bucket", "some/prefix"));
                assert_eq!(options.endpoint.as_deref(), Some("http://s3:8333"));
            }
            other => panic!("expected S3, got {other:?}"),
        }
        for bad in ["mysql://x", "sqlite://", "s3:///prefix", "ftp://x"] {
            let args = ServeArgs { database: Some(bad.into()), blobs: Some(bad.into()), ..Default::default() };
            assert!(Settings::resolve(&args).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn a_signing_key_must_be_long_enough() {
        let short = ServeArgs { signing_key: Some("too-short".into()), ..Default::default() };
        assert!(Settings::resolve(&short).is_err());
        let key = "k".repeat(MIN_SIGNING_KEY_CHARS);
        let ok = ServeArgs { signing_key: Some(key.clone()), ..Default::default() };
        assert_eq!(Settings::resolve(&ok).expect("resolve").signing_key, Some(key));
    }

    #[tokio::test]
    async fn secrets_are_generated_once_and_kept_in_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = argus_store::SqliteStore::open(&dir.path().join("argus.db")).await.expect("store");
        let (a, fresh) = load_or_create_secrets(&store, dir.path()).await.expect("create");
        assert!(fresh);
        let (b, fresh) = load_or_create_secrets(&store, dir.path()).await.expect("load");
        assert!(!fresh);
        assert_eq!((a.training_key.clone(), a.signing_key.clone()), (b.training_key, b.signing_key));
        assert_eq!(a.training_key.len(), 32);
        assert!(!dir.path().join("secrets.json").exists(), "no per-node file");
    }

    #[tokio::test]
    async fn a_data_directory_from_before_keeps_its_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = Secrets { training_key: "t".repeat(32), prediction_key: "p".repeat(32), signing_key: "s".repeat(64) };
        std::fs::write(dir.path().join("secrets.json"), serde_json::to_vec(&old).expect("json")).expect("write");
        let store = argus_store::SqliteStore::open(&dir.path().join("argus.db")).await.expect("store");
        let (got, fresh) = load_or_create_secrets(&store, dir.path()).await.expect("load");
        assert!(!fresh);
        assert_eq!(
            (got.training_key, got.prediction_key, got.signing_key),
            (old.training_key, old.prediction_key, old.signing_key)
        );
    }
}
