//! Packs the controller plugin into the `worker.zip` that WorkManager's `NativeDllEngine` loads:
//!
//! ```text
//! <PackageId>.nuspec                      read by newer WorkManager builds
//! manifest.json                           read by older ones, shipped byte for byte
//! runtimes/<rid>/native/libcontroller.so  .dylib on macOS, controller.dll on Windows
//! ```
//!
//! The output is reproducible (sorted entries, fixed timestamps, modes and deflate level) so a package
//! hash identifies its inputs. All checks happen before anything is written.

pub mod archive;
pub mod error;
pub mod manifest;
pub mod nuspec;
pub mod rid;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::PackError;
pub use manifest::Manifest;
pub use nuspec::Nuspec;
pub use rid::Rid;

/// The NuGet id WorkManager clients know this worker by.
pub const DEFAULT_PACKAGE_ID: &str = "Virtufin.Worker.WebSocketManagerController";

/// The controller crate's version. `scripts/build_worker.sh` passes the real one from `cargo metadata`;
/// this default only serves direct calls of the tool.
pub const DEFAULT_VERSION: &str = "0.1.0";

pub const AUTHORS: &str = "Virtufin";
pub const DESCRIPTION: &str =
    "WebSocket Manager controller: a WorkManager NativeDllEngine worker plugin (C ABI v1)";

/// The C-ABI exports of the controller (see SPEC section 1); the engine resolves them by these names.
pub const ENTRY_POINT: &str = "Process";
pub const FREE_RESULT: &str = "FreeResult";

/// Everything one package is built from.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// The built shared library, e.g. `target/release/libcontroller.so`.
    pub library: PathBuf,
    /// The repository's `manifest.json`.
    pub manifest: PathBuf,
    /// Runtime identifier, e.g. `linux-x64`.
    pub rid: String,
    pub package_id: String,
    pub version: String,
}

impl PackOptions {
    /// Options with the default package id and version.
    pub fn new(
        library: impl Into<PathBuf>,
        manifest: impl Into<PathBuf>,
        rid: impl Into<String>,
    ) -> Self {
        PackOptions {
            library: library.into(),
            manifest: manifest.into(),
            rid: rid.into(),
            package_id: DEFAULT_PACKAGE_ID.to_owned(),
            version: DEFAULT_VERSION.to_owned(),
        }
    }
}

/// Checks the inputs and returns the zip bytes.
pub fn build(options: &PackOptions) -> Result<Vec<u8>, PackError> {
    let rid = Rid::parse(&options.rid)?;
    nuspec::check_package_id(&options.package_id)?;
    nuspec::check_version(&options.version)?;
    let manifest = Manifest::read(&options.manifest)?;

    let expected = rid.library_file_name(&manifest.library);
    let found = options
        .library
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    if found != expected {
        return Err(PackError::LibraryName {
            path: options.library.clone(),
            found,
            expected,
            rid: rid.as_str().to_owned(),
        });
    }
    let library = std::fs::read(&options.library).map_err(|source| PackError::Read {
        what: "library",
        path: options.library.clone(),
        source,
    })?;

    let spec = Nuspec {
        id: &options.package_id,
        version: &options.version,
        authors: AUTHORS,
        description: DESCRIPTION,
        abi_version: manifest.abi_version,
        library: &manifest.library,
        entry_point: ENTRY_POINT,
        free_result: FREE_RESULT,
    };
    let mut entries = BTreeMap::new();
    entries.insert(spec.file_name(), spec.render().into_bytes());
    entries.insert("manifest.json".to_owned(), manifest.bytes);
    entries.insert(
        format!("runtimes/{}/native/{expected}", rid.as_str()),
        library,
    );
    archive::build(&entries)
}

/// Builds the package and writes it to `out`, creating parent folders. The bytes go to a sibling
/// temporary file first, so a failed run never leaves a truncated `worker.zip` behind.
pub fn write(options: &PackOptions, out: &Path) -> Result<(), PackError> {
    let bytes = build(options)?;
    let write_error = |source| PackError::Write {
        path: out.to_owned(),
        source,
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(write_error)?;
    }
    let Some(file_name) = out.file_name() else {
        return Err(write_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the output path must name a file",
        )));
    };
    let mut tmp_name = file_name.to_owned();
    tmp_name.push(".tmp");
    let tmp = out.with_file_name(tmp_name);
    let result = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, out));
    if let Err(source) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_error(source));
    }
    Ok(())
}
