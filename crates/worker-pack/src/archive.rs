//! A reproducible zip: the same entries give the same bytes on every machine and every run.
//! Everything the zip crate would otherwise take from the environment (clock, host os, default level)
//! is pinned here.

use std::collections::BTreeMap;
use std::io::{Cursor, Write};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, System, ZipWriter};

use crate::error::PackError;

/// Deflate level; changing it changes every package hash.
pub const DEFLATE_LEVEL: i64 = 6;

/// Unix mode of every entry. The engine `dlopen`s the library, which needs read access only.
pub const FILE_MODE: u32 = 0o644;

/// Builds the archive in memory. `BTreeMap` order is byte order of the names, which is the entry order.
pub fn build(entries: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, PackError> {
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(DEFLATE_LEVEL))
        // 1980-01-01 00:00:00, the earliest DOS timestamp; the zip crate would otherwise use "now".
        .last_modified_time(DateTime::default())
        .system(System::Unix)
        .unix_permissions(FILE_MODE)
        .large_file(false);
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, contents) in entries {
        writer.start_file(name.as_str(), options)?;
        writer
            .write_all(contents)
            .map_err(|err| PackError::Zip(err.into()))?;
    }
    Ok(writer.finish()?.into_inner())
}
