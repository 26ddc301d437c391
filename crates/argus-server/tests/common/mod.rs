//! A real Argus server on a free loopback port over a temporary data directory, for integration tests.

#![allow(dead_code)]

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use argus_app::config::{ServeArgs, Settings};
use argus_app::{Node, NodeOptions};
use argus_core::jobs::JobQueue;
use argus_core::store::MetadataStore;
use argus_core::Argus;
use argus_store::{PostgresStore, SqliteStore};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sha2::Digest;

pub const KEY: &str = "test-training-key";
pub const SIGNING: &str = "test-signing-secret-of-32-characters";
pub const PREDICTION_KEY: &str = "test-prediction-key";
pub const VISION_KEY: &str = "test-vision-key";

/// A node started by the composition root (`argus_app::Node`, as `argus serve` starts one) over a temporary
/// data directory, with fixed keys, on a free loopback port.
pub struct TestServer {
    pub base: String,
    pub root: String,
    pub argus: Argus,
    pub client: reqwest::Client,
    node: Option<Node>,
}

pub struct Options {
    pub allow_private_urls: bool,
    pub max_images_per_project: u64,
    pub lease: std::time::Duration,
    pub max_running_vision_jobs: u64,
    pub sam_weights: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            allow_private_urls: false,
            max_images_per_project: argus_core::limits::MAX_IMAGES_PER_PROJECT,
            lease: std::time::Duration::from_secs(30),
            max_running_vision_jobs: 20,
            sam_weights: None,
        }
    }
}

/// The metadata database of a test server over `dir`: SQLite in it, or, with `ARGUS_TEST_STORE=postgres` (the
/// test command's second pass), a PostgreSQL database on `ARGUS_TEST_POSTGRES_URL` named after `dir`, so that a
/// server restarted on the same directory finds its data again and servers on other directories share nothing.
pub fn database_url(dir: &Path) -> String {
    if std::env::var("ARGUS_TEST_STORE").as_deref() == Ok("postgres") {
        let base =
            std::env::var("ARGUS_TEST_POSTGRES_URL").expect("ARGUS_TEST_STORE=postgres needs ARGUS_TEST_POSTGRES_URL");
        let digest = sha2::Sha256::digest(dir.display().to_string().as_bytes());
        let name: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        return format!("{}/t{name}", base.rsplit_once('/').map(|(b, _)| b).unwrap_or(&base));
    }
    format!("sqlite://{}", dir.join("argus.db").display())
}

/// The metadata store of a test server over `dir` (see [`database_url`]), opened directly.
pub async fn open_store(dir: &Path) -> (Arc<dyn MetadataStore>, Arc<dyn JobQueue>) {
    let url = database_url(dir);
    if let Some(path) = url.strip_prefix("sqlite://") {
        let store = Arc::new(SqliteStore::open(Path::new(path)).await.expect("open store"));
        return (store.clone(), store);
    }
    PostgresStore::create_database_if_missing(&url).await.expect("create the test database");
    let store = Arc::new(PostgresStore::connect(&url).await.expect("open the PostgreSQL store"));
    (store.clone(), store)
}

impl TestServer {
    pub async fn start(dir: &Path) -> Self {
        Self::start_with(dir, Options::default()).await
    }

    pub async fn start_with(dir: &Path, opts: Options) -> Self {
        let settings = Settings::resolve(&ServeArgs {
            data_dir: Some(dir.to_path_buf()),
            database: Some(database_url(dir)),
            models_dir: Some(argus_vision_models_dir()),
            allow_private_urls: Some(opts.allow_private_urls),
            max_images_per_project: Some(opts.max_images_per_project),
            max_running_vision_jobs: Some(opts.max_running_vision_jobs),
            sam_weights: opts.sam_weights.clone(),
            training_key: Some(KEY.into()),
            prediction_key: Some(PREDICTION_KEY.into()),
            vision_key: Some(VISION_KEY.into()),
            signing_key: Some(SIGNING.into()),
            ..Default::default()
        })
        .expect("test settings");
        let options = NodeOptions {
            training_workers: 1,
            segment_workers: 2,
            training_poll: std::time::Duration::from_millis(50),
            job_lease: opts.lease,
            ..NodeOptions::loopback()
        };
        let node = Node::start(&settings, options).await.expect("start the test node");
        let root = node.url();
        Self {
            base: format!("{root}/customvision/v3.3/training"),
            root,
            argus: node.state.argus.clone(),
            client: reqwest::Client::new(),
            node: Some(node),
        }
    }

    /// Simulates a crash: the workers die mid-job and the server stops.
    pub async fn kill(mut self) {
        if let Some(node) = self.node.take() {
            node.kill().await;
        }
    }

    /// Stops the server, letting running jobs finish.
    pub async fn stop(mut self) {
        if let Some(node) = self.node.take() {
            let _ = node.stop(true).await;
        }
    }

    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{}", self.base, path)).header("Training-Key", KEY)
    }

    /// A Prediction API request (`/customvision/{version}/prediction{path}`) with the prediction key.
    pub fn predict_req(&self, version: &str, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/customvision/{version}/prediction{path}", self.root))
            .header("Prediction-Key", PREDICTION_KEY)
    }

    /// Sends and returns (status, JSON body or Null).
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = rb.send().await.expect("send");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub async fn call(&self, method: Method, path: &str) -> (StatusCode, Value) {
        self.send(self.req(method, path)).await
    }

    pub async fn project(&self, query: &str) -> String {
        let (s, v) = self.call(Method::POST, &format!("/projects?{query}")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["id"].as_str().expect("id").to_string()
    }

    pub async fn tag(&self, project: &str, name: &str) -> String {
        let (s, v) = self.call(Method::POST, &format!("/projects/{project}/tags?name={name}")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["id"].as_str().expect("id").to_string()
    }

    pub async fn upload(&self, project: &str, images: Vec<Vec<u8>>, query: &str) -> (StatusCode, Value) {
        let mut form = reqwest::multipart::Form::new();
        for img in images {
            form = form.part("imageData", reqwest::multipart::Part::bytes(img));
        }
        self.send(self.req(Method::POST, &format!("/projects/{project}/images?{query}")).multipart(form)).await
    }
}

/// Asserts an error response: status and official code.
pub fn assert_error(resp: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(resp.0.as_u16(), status, "body: {}", resp.1);
    assert_eq!(resp.1["code"], code, "body: {}", resp.1);
    assert!(resp.1["message"].as_str().is_some_and(|m| !m.is_empty()));
}

/// A distinct image per seed, encoded in `format`.
pub fn image_bytes(seed: u32, w: u32, h: u32, format: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| {
        Rgb([((x * 7 + seed * 31) % 256) as u8, ((y * 5 + seed * 17) % 256) as u8, (seed % 256) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img).write_to(&mut out, format).expect("encode");
    out.into_inner()
}

pub fn jpeg(seed: u32) -> Vec<u8> {
    image_bytes(seed, 64, 48, ImageFormat::Jpeg)
}

/// The models directory of the tests (ARGUS_MODELS_DIR or `<workspace>/argus-models`).
pub fn argus_vision_models_dir() -> std::path::PathBuf {
    std::env::var_os("ARGUS_MODELS_DIR")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../argus-models"))
}

/// A real photograph shipped with scikit-image (fetched by scripts/fetch-test-photos.sh).
pub fn photo(name: &str) -> image::RgbImage {
    let path = argus_vision_models_dir().join("photos").join(name);
    image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-test-photos.sh)", path.display()))
        .to_rgb8()
}

/// JPEG bytes of a crop of `img` (fractions of its size).
pub fn crop_jpeg(img: &image::RgbImage, x: f32, y: f32, w: f32, h: f32) -> Vec<u8> {
    let (iw, ih) = img.dimensions();
    let c = image::imageops::crop_imm(
        img,
        (iw as f32 * x) as u32,
        (ih as f32 * y) as u32,
        (iw as f32 * w) as u32,
        (ih as f32 * h) as u32,
    )
    .to_image();
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(c).write_to(&mut out, ImageFormat::Jpeg).expect("encode");
    out.into_inner()
}

/// Waits until the iteration leaves `Training`; returns it. The limit only guards against a hang: an unoptimised
/// test build on CI's two shared cores trains several times slower than a release build, so it is generous.
pub async fn wait_trained(s: &TestServer, project: &str, iteration: &str) -> Value {
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(600) {
        let (st, it) = s.call(Method::GET, &format!("/projects/{project}/iterations/{iteration}")).await;
        assert_eq!(st, StatusCode::OK, "{it}");
        if it["status"] != "Training" {
            return it;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("training did not finish in 600 s");
}
