//! The migration's journal: which source project, tag and image became which destination one.
//!
//! It lets a rerun skip what an earlier (possibly killed) run finished without downloading it again, and keeps
//! the ids it chose for the destination before creating anything, so that a rerun finds the same project even
//! when the source's id was taken there. It is written atomically (temporary file, fsync, rename) after every
//! batch. Losing it costs time, not correctness: the destination deduplicates images by content, and projects
//! and tags keep the source's ids when they can.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The journal file's contents.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Journal {
    /// The source's Training API base URL.
    pub source: String,
    /// The destination's Training API base URL, or the data directory.
    pub destination: String,
    /// Per source project id.
    pub projects: BTreeMap<Uuid, ProjectState>,
    #[serde(skip)]
    path: PathBuf,
}

/// What is known about one project's migration.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectState {
    /// Name at the source.
    pub name: String,
    /// The destination project's id (chosen before it is created).
    pub destination: Uuid,
    /// Source tag id → destination tag id.
    pub tags: BTreeMap<Uuid, Uuid>,
    /// Source image id → destination image id, for images whose tags, regions and metadata are all copied.
    pub images: BTreeMap<Uuid, Uuid>,
    /// Every image was visited (copied, skipped or reported as failed).
    pub complete: bool,
}

impl Journal {
    /// Opens the journal at `path` for a migration from `source` to `destination`, or starts a new one. A journal
    /// of another migration is refused rather than mixed up with this one.
    pub fn open(path: &Path, source: &str, destination: &str) -> Result<Self> {
        let mut journal = match std::fs::read(path) {
            Ok(bytes) => {
                let j: Journal = serde_json::from_slice(&bytes)
                    .with_context(|| format!("reading the journal {} (delete it to start over)", path.display()))?;
                if j.source != source || j.destination != destination {
                    return Err(anyhow!(
                        "the journal {} belongs to a migration from {} to {}; pass another --journal",
                        path.display(),
                        j.source,
                        j.destination
                    ));
                }
                j
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Journal { source: source.to_string(), destination: destination.to_string(), ..Default::default() }
            }
            Err(e) => return Err(anyhow!(e).context(format!("reading the journal {}", path.display()))),
        };
        journal.path = path.to_path_buf();
        Ok(journal)
    }

    /// Writes the journal atomically.
    pub fn save(&self) -> Result<()> {
        write_atomically(&self.path, &serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing the journal {}", self.path.display()))
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder, fsynced and renamed into place.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_round_trips_and_refuses_another_migration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.json");
        let mut j = Journal::open(&path, "http://a", "http://b").expect("new");
        let (p, t, i) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        j.projects.insert(p, ProjectState { name: "x".into(), destination: p, ..Default::default() });
        j.projects.get_mut(&p).expect("p").tags.insert(t, t);
        j.projects.get_mut(&p).expect("p").images.insert(i, Uuid::new_v4());
        j.save().expect("save");
        let again = Journal::open(&path, "http://a", "http://b").expect("reopen");
        assert_eq!(again.projects[&p].tags[&t], t);
        assert_eq!(again.projects[&p].images.len(), 1);
        let err = Journal::open(&path, "http://c", "http://b").expect_err("other source");
        assert!(err.to_string().contains("belongs to a migration from http://a"), "{err}");
    }
}
