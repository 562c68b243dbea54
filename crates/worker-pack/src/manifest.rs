//! `manifest.json`: the older worker descriptor (`{"abi_version": 1, "library": "controller"}`). It is shipped
//! byte for byte; the packer only checks it, so the file in the repository stays the single source.

use std::path::Path;

use crate::error::PackError;

/// The only plugin ABI this packer knows how to describe; WorkManager refuses versions it does not support.
pub const ABI_VERSION: i64 = 1;

/// A checked manifest and its original bytes.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub abi_version: i64,
    pub library: String,
    pub bytes: Vec<u8>,
}

impl Manifest {
    /// Reads and checks the manifest at `path`.
    pub fn read(path: &Path) -> Result<Manifest, PackError> {
        let bytes = std::fs::read(path).map_err(|source| PackError::Read {
            what: "manifest",
            path: path.to_owned(),
            source,
        })?;
        Manifest::parse(path, bytes)
    }

    /// Checks manifest bytes; `path` only labels the errors.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Manifest, PackError> {
        let invalid = |detail: String| PackError::Manifest {
            path: path.to_owned(),
            detail,
        };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|err| PackError::ManifestJson {
                path: path.to_owned(),
                detail: err.to_string(),
            })?;
        let object = value
            .as_object()
            .ok_or_else(|| invalid("expected a JSON object".into()))?;

        let abi_version = match object.get("abi_version") {
            None => return Err(invalid("missing \"abi_version\"".into())),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| invalid(format!("\"abi_version\" must be an integer, got {v}")))?,
        };
        if abi_version != ABI_VERSION {
            return Err(invalid(format!(
                "\"abi_version\" is {abi_version}, but the controller implements ABI version {ABI_VERSION}"
            )));
        }

        let library = match object.get("library") {
            None => return Err(invalid("missing \"library\"".into())),
            Some(v) => v
                .as_str()
                .ok_or_else(|| invalid(format!("\"library\" must be a string, got {v}")))?,
        };
        check_library_name(library).map_err(invalid)?;

        Ok(Manifest {
            abi_version,
            library: library.to_owned(),
            bytes,
        })
    }
}

/// The engine's rule for `virtufinLibrary`: it becomes part of a path, so no separators and no `..`.
fn check_library_name(library: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if library.is_empty() || library.len() > 128 {
        return Err(format!(
            "\"library\" must be 1 to 128 characters, got {:?}",
            library
        ));
    }
    if !library.chars().all(allowed) || library.contains("..") {
        return Err(format!(
            "\"library\" {library:?} may only use A-Z a-z 0-9 _ . - and must not contain \"..\""
        ));
    }
    Ok(())
}
