//! Export packages as zip files: deterministic bytes (fixed timestamps, the order given), Unix modes kept for
//! a Docker build context, large files streamed rather than read whole.

/// What a file of a package holds.
#[derive(Debug, Clone)]
pub enum PackageContent {
    /// These bytes.
    Bytes(Vec<u8>),
    /// The content of this file, copied in a stream (never read into memory whole).
    File(std::path::PathBuf),
}

/// A file of a package written by [`zip_files`].
#[derive(Debug, Clone)]
pub struct PackageFile {
    /// Path inside the zip.
    pub name: String,
    /// Content.
    pub content: PackageContent,
    /// Marked executable (mode 755) and stored uncompressed (executables are large and deflate slowly).
    pub executable: bool,
}

impl PackageFile {
    /// A plain (deflated, mode 644) file with these bytes.
    pub fn new(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        Self { name: name.into(), content: PackageContent::Bytes(bytes), executable: false }
    }

    /// A plain file copied from `path`.
    pub fn copy_of(name: impl Into<String>, path: impl Into<std::path::PathBuf>) -> Self {
        Self { name: name.into(), content: PackageContent::File(path.into()), executable: false }
    }
}

/// Writes a zip of `files` to `out` with fixed timestamps and Unix modes (a Docker build context: `COPY` keeps
/// the modes); file contents are streamed.
pub fn zip_files<W: std::io::Write + std::io::Seek>(out: W, files: &[PackageFile]) -> std::io::Result<W> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(out);
    let base = zip::write::SimpleFileOptions::default().last_modified_time(zip::DateTime::default());
    for f in files {
        let options = if f.executable {
            base.compression_method(zip::CompressionMethod::Stored).unix_permissions(0o755)
        } else {
            base.compression_method(zip::CompressionMethod::Deflated).unix_permissions(0o644)
        };
        // Large entries need the 64-bit zip extension.
        let size = match &f.content {
            PackageContent::Bytes(b) => b.len() as u64,
            PackageContent::File(p) => std::fs::metadata(p)?.len(),
        };
        zip.start_file(f.name.as_str(), options.large_file(size >= u32::MAX as u64)).map_err(std::io::Error::other)?;
        match &f.content {
            PackageContent::Bytes(b) => zip.write_all(b)?,
            PackageContent::File(p) => {
                std::io::copy(&mut std::fs::File::open(p)?, &mut zip)?;
            }
        }
    }
    zip.finish().map_err(std::io::Error::other)
}

/// A zip of `files` (name, bytes) in the order given, deflated, with fixed timestamps: the same files make the
/// same bytes.
pub fn zip_package(files: &[(&str, Vec<u8>)]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default());
    for (name, bytes) in files {
        zip.start_file(*name, options).map_err(std::io::Error::other)?;
        zip.write_all(bytes)?;
    }
    Ok(zip.finish().map_err(std::io::Error::other)?.into_inner())
}
