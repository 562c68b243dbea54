//! The one error type of the packer. Every message names the input at fault and what was expected,
//! because the tool runs inside build scripts where the message is all the user sees.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a `worker.zip` could not be built or written.
#[derive(Debug)]
pub enum PackError {
    /// An input file is missing or unreadable.
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// `manifest.json` is not JSON at all.
    ManifestJson { path: PathBuf, detail: String },
    /// `manifest.json` parses but breaks a rule the engine relies on.
    Manifest { path: PathBuf, detail: String },
    /// The library file name is not what the engine derives from the manifest and the rid.
    LibraryName {
        path: PathBuf,
        found: String,
        expected: String,
        rid: String,
    },
    /// The rid is not `<os>-<arch>` with a known os and arch.
    Rid { rid: String, detail: String },
    /// A package id or version that NuGet tooling would refuse.
    Nuspec { field: &'static str, detail: String },
    /// The zip crate failed while building the archive in memory.
    Zip(zip::result::ZipError),
    /// The finished archive could not be written to its destination.
    Write { path: PathBuf, source: io::Error },
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackError::Read { what, path, source } => {
                write!(f, "cannot read {what} '{}': {source}", path.display())
            }
            PackError::ManifestJson { path, detail } => {
                write!(f, "manifest '{}' is not valid JSON: {detail}", path.display())
            }
            PackError::Manifest { path, detail } => {
                write!(f, "manifest '{}': {detail}", path.display())
            }
            PackError::LibraryName {
                path,
                found,
                expected,
                rid,
            } => write!(
                f,
                "library file '{}' is named '{found}', but the manifest and rid {rid} require '{expected}' \
                 (the engine derives the file name from the manifest's \"library\")",
                path.display()
            ),
            PackError::Rid { rid, detail } => write!(f, "unknown rid '{rid}': {detail}"),
            PackError::Nuspec { field, detail } => write!(f, "invalid {field}: {detail}"),
            PackError::Zip(err) => write!(f, "cannot build the zip archive: {err}"),
            PackError::Write { path, source } => {
                write!(f, "cannot write '{}': {source}", path.display())
            }
        }
    }
}

impl std::error::Error for PackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PackError::Read { source, .. } | PackError::Write { source, .. } => Some(source),
            PackError::Zip(err) => Some(err),
            _ => None,
        }
    }
}

impl From<zip::result::ZipError> for PackError {
    fn from(err: zip::result::ZipError) -> Self {
        PackError::Zip(err)
    }
}
