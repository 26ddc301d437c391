//! A dataset's files: a folder or a zip archive, read by `/`-separated relative paths or written.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, Context, Result};

/// Largest single file read from a dataset (an image or an annotation file).
const MAX_FILE_BYTES: u64 = 256 << 20;

/// A dataset to read: a folder or a `.zip`.
pub enum Files {
    /// A folder on disk.
    Dir(PathBuf),
    /// A zip archive.
    Zip(Box<zip::ZipArchive<std::fs::File>>),
}

impl Files {
    /// Opens a folder, or a zip file.
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Ok(Self::Dir(path.to_path_buf()));
        }
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let zip =
            zip::ZipArchive::new(file).with_context(|| format!("{} is neither a folder nor a zip", path.display()))?;
        Ok(Self::Zip(Box::new(zip)))
    }

    /// Every file's relative path, `/`-separated, sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        match self {
            Self::Dir(root) => {
                let mut out = BTreeSet::new();
                let mut stack = vec![root.clone()];
                while let Some(dir) = stack.pop() {
                    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
                        let entry = entry?;
                        let path = entry.path();
                        if entry.file_type()?.is_dir() {
                            stack.push(path);
                        } else if let Ok(rel) = path.strip_prefix(root) {
                            let parts: Vec<String> =
                                rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
                            out.insert(parts.join("/"));
                        }
                    }
                }
                Ok(out.into_iter().collect())
            }
            Self::Zip(zip) => {
                let mut out: Vec<String> = zip
                    .file_names()
                    .filter(|n| !n.ends_with('/'))
                    .map(|n| n.trim_start_matches("./").to_string())
                    .collect();
                out.sort();
                Ok(out)
            }
        }
    }

    /// A file's bytes.
    pub fn read(&mut self, path: &str) -> Result<Vec<u8>> {
        let rel = safe_relative(path)?;
        match self {
            Self::Dir(root) => {
                let full = root.join(rel);
                let len = std::fs::metadata(&full).with_context(|| format!("reading {path}"))?.len();
                if len > MAX_FILE_BYTES {
                    return Err(anyhow!("{path} is {len} bytes, more than {MAX_FILE_BYTES}"));
                }
                std::fs::read(&full).with_context(|| format!("reading {path}"))
            }
            Self::Zip(zip) => {
                let entry = zip.by_name(path).with_context(|| format!("{path} is not in the archive"))?;
                let mut out = Vec::new();
                entry.take(MAX_FILE_BYTES + 1).read_to_end(&mut out)?;
                if out.len() as u64 > MAX_FILE_BYTES {
                    return Err(anyhow!("{path} is larger than {MAX_FILE_BYTES} bytes"));
                }
                Ok(out)
            }
        }
    }

    /// A file's text (UTF-8, a byte-order mark dropped).
    pub fn read_text(&mut self, path: &str) -> Result<String> {
        let bytes = self.read(path)?;
        let text = String::from_utf8(bytes).with_context(|| format!("{path} is not UTF-8"))?;
        Ok(text.trim_start_matches('\u{feff}').to_string())
    }
}

/// A relative path with no `..`, root or drive: what an archive or annotation may name.
fn safe_relative(path: &str) -> Result<PathBuf> {
    let p = Path::new(path);
    if path.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(anyhow!("'{path}' is not a relative path inside the dataset"));
    }
    Ok(p.to_path_buf())
}

/// Where an export goes: a folder, or a zip written to a temporary file and renamed into place by
/// [`Sink::finish`] (an interrupted export leaves no half-written zip).
pub enum Sink {
    /// A folder on disk.
    Dir(PathBuf),
    /// A zip being written, and its final path.
    Zip(Box<zip::ZipWriter<tempfile::NamedTempFile>>, PathBuf),
}

impl Sink {
    /// A folder (created when missing).
    pub fn dir(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self::Dir(path.to_path_buf()))
    }

    /// A zip at `path`.
    pub fn zip(path: &Path) -> Result<Self> {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent)?;
        let tmp = tempfile::NamedTempFile::new_in(&parent)?;
        Ok(Self::Zip(Box::new(zip::ZipWriter::new(tmp)), path.to_path_buf()))
    }

    /// A folder, or a zip when `path` ends in `.zip`.
    pub fn create(path: &Path) -> Result<Self> {
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("zip")) {
            Self::zip(path)
        } else {
            Self::dir(path)
        }
    }

    /// Writes one file.
    pub fn put(&mut self, path: &str, bytes: &[u8]) -> Result<()> {
        let rel = safe_relative(path)?;
        match self {
            Self::Dir(root) => {
                let full = root.join(rel);
                if let Some(parent) = full.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&full, bytes).with_context(|| format!("writing {}", full.display()))
            }
            Self::Zip(zip, _) => {
                // Images are compressed already; annotations shrink well.
                let method = if crate::is_image_path(path) {
                    zip::CompressionMethod::Stored
                } else {
                    zip::CompressionMethod::Deflated
                };
                let options = zip::write::SimpleFileOptions::default()
                    .compression_method(method)
                    .last_modified_time(zip::DateTime::default());
                zip.start_file(path, options)?;
                zip.write_all(bytes)?;
                Ok(())
            }
        }
    }

    /// Completes the export (for a zip: central directory, fsync, rename into place).
    pub fn finish(self) -> Result<()> {
        match self {
            Self::Dir(_) => Ok(()),
            Self::Zip(zip, path) => {
                let tmp = zip.finish()?;
                tmp.as_file().sync_all()?;
                tmp.persist(&path)
                    .map_err(|e| anyhow!(e.error))
                    .with_context(|| format!("writing {}", path.display()))?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zip_and_a_folder_hold_the_same_files() {
        let dir = tempfile::tempdir().expect("tmp");
        for target in [dir.path().join("out"), dir.path().join("out.zip")] {
            let mut sink = Sink::create(&target).expect("sink");
            sink.put("images/a.jpg", b"jpeg").expect("put");
            sink.put("labels/a.txt", b"0 0.5 0.5 1 1\n").expect("put");
            assert!(sink.put("../escape.txt", b"x").is_err());
            sink.finish().expect("finish");
            let mut files = Files::open(&target).expect("open");
            assert_eq!(files.list().expect("list"), vec!["images/a.jpg", "labels/a.txt"]);
            assert_eq!(files.read("images/a.jpg").expect("read"), b"jpeg");
            assert!(files.read("../../etc/passwd").is_err());
        }
    }
}
