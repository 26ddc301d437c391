//! Classification as a folder per tag (`<tag>/<file>`, the ImageFolder / Ultralytics classify layout): an image
//! with several tags (Multilabel) is written into each of their folders and read back as one image with all of
//! them (the copies are matched by content); untagged images live in `_untagged/`. Reading also accepts
//! Ultralytics' `train|val|test/<tag>/<file>` split folders. Characters a folder name cannot hold (`/`, `\`, a
//! leading `.`) are written as `_`.

use std::collections::HashMap;

use anyhow::{anyhow, Result};
use sha2::{Digest, Sha256};

use crate::{Dataset, Files, Item, Sink};

/// The folder of untagged images.
pub const UNTAGGED: &str = "_untagged";

/// A tag name as a folder name.
fn folder(name: &str) -> String {
    let mut s: String = name.chars().map(|c| if matches!(c, '/' | '\\' | '\0') { '_' } else { c }).collect();
    if s.starts_with('.') || s.is_empty() {
        s.replace_range(..s.chars().next().map_or(0, char::len_utf8), "_");
        if s.is_empty() {
            s.push('_');
        }
    }
    s
}

/// Where an image goes: one path per tag, or the untagged folder.
pub fn paths(d: &Dataset, item: &Item) -> Vec<String> {
    if item.tags.is_empty() {
        return vec![format!("{UNTAGGED}/{}", item.path)];
    }
    item.tags.iter().map(|t| format!("{}/{}", folder(&d.categories[*t]), item.path)).collect()
}

/// Folder layouts need no annotation file; a `labels.txt` lists the tags in order.
pub fn write(d: &Dataset, sink: &mut Sink) -> Result<()> {
    let mut text = d.categories.join("\n");
    text.push('\n');
    sink.put("labels.txt", text.as_bytes())
}

/// Reads a folder-per-tag set.
pub fn read(files: &mut Files) -> Result<Dataset> {
    let all = files.list()?;
    let mut categories: Vec<String> = Vec::new();
    let mut items: Vec<Item> = Vec::new();
    let mut by_hash: HashMap<[u8; 32], usize> = HashMap::new();
    for path in all.iter().filter(|p| crate::is_image_path(p)) {
        let parts: Vec<&str> = path.split('/').collect();
        let tag = match parts.len() {
            0 | 1 => None,
            2 => Some(parts[0]),
            n if matches!(parts[0].to_ascii_lowercase().as_str(), "train" | "val" | "valid" | "test") => {
                Some(parts[n - 2])
            }
            n => Some(parts[n - 2]),
        }
        .filter(|t| *t != UNTAGGED);
        let bytes = files.read(path)?;
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        let index = match by_hash.get(&hash) {
            Some(i) => *i,
            None => {
                let (width, height) = crate::dimensions(&bytes).unwrap_or((0, 0));
                items.push(Item { path: path.clone(), width, height, tags: vec![], boxes: vec![] });
                by_hash.insert(hash, items.len() - 1);
                items.len() - 1
            }
        };
        if let Some(t) = tag {
            let c = match categories.iter().position(|c| c == t) {
                Some(c) => c,
                None => {
                    categories.push(t.to_string());
                    categories.len() - 1
                }
            };
            if !items[index].tags.contains(&c) {
                items[index].tags.push(c);
            }
        }
    }
    if items.is_empty() {
        return Err(anyhow!("no images were found"));
    }
    Ok(Dataset { detection: false, categories, items })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{classification_set, labels, round_trip};
    use crate::Format;

    #[test]
    fn multilabel_and_untagged_images_round_trip() {
        let d = classification_set();
        for format in [Format::Yolo, Format::Voc] {
            let back = round_trip(format, &d);
            assert!(!back.detection);
            assert_eq!(labels(&back), labels(&d));
        }
    }

    #[test]
    fn folder_names_are_safe() {
        assert_eq!(folder("a/b"), "a_b");
        assert_eq!(folder(".hidden"), "_hidden");
        assert_eq!(folder(""), "_");
    }
}
