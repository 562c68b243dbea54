//! .NET runtime identifiers (`linux-x64`, `osx-arm64`, ...). The engine picks the folder
//! `runtimes/<rid>/native/` that equals its own `RuntimeInformation.RuntimeIdentifier`, so a typo here
//! ships a package that loads nowhere; that is why only portable `<os>-<arch>` rids are accepted.

use crate::error::PackError;

/// Portable rid operating systems, longest first so `linux-musl` wins over `linux`.
const OSES: [(&str, Os); 5] = [
    ("linux-musl", Os::Linux),
    ("linux", Os::Linux),
    ("freebsd", Os::Linux),
    ("osx", Os::MacOs),
    ("win", Os::Windows),
];

const ARCHES: [&str; 8] = [
    "x64",
    "arm64",
    "x86",
    "arm",
    "riscv64",
    "loongarch64",
    "s390x",
    "ppc64le",
];

/// How the platform names a shared library; the only thing the packer needs to know about an os.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    /// ELF platforms: `lib<name>.so`.
    Linux,
    /// `lib<name>.dylib`.
    MacOs,
    /// `<name>.dll`, no `lib` prefix (what `cargo build` and .NET's `LibraryName` both produce).
    Windows,
}

/// A validated rid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rid {
    text: String,
    os: Os,
}

impl Rid {
    /// Accepts `<os>-<arch>` with os one of `linux`, `linux-musl`, `freebsd`, `osx`, `win`.
    pub fn parse(text: &str) -> Result<Rid, PackError> {
        let reject = |detail: String| PackError::Rid {
            rid: text.to_owned(),
            detail,
        };
        let (os_part, arch) = text.rsplit_once('-').ok_or_else(|| {
            reject("expected <os>-<arch>, e.g. linux-x64, linux-arm64, osx-arm64, win-x64".into())
        })?;
        let os = OSES
            .iter()
            .find(|(name, _)| *name == os_part)
            .map(|(_, os)| *os)
            .ok_or_else(|| {
                let names: Vec<&str> = OSES.iter().map(|(name, _)| *name).collect();
                reject(format!(
                    "os '{os_part}' is not one of {} (version-specific rids are not portable)",
                    names.join(", ")
                ))
            })?;
        if !ARCHES.contains(&arch) {
            return Err(reject(format!(
                "arch '{arch}' is not one of {}",
                ARCHES.join(", ")
            )));
        }
        Ok(Rid {
            text: text.to_owned(),
            os,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn os(&self) -> Os {
        self.os
    }

    /// The file name the engine looks for, built the way .NET's `LibraryName.BuildFileName` does.
    pub fn library_file_name(&self, library: &str) -> String {
        match self.os {
            Os::Linux => format!("lib{library}.so"),
            Os::MacOs => format!("lib{library}.dylib"),
            Os::Windows => format!("{library}.dll"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_rids_parse_and_name_the_library_per_os() {
        let cases = [
            ("linux-x64", "libcontroller.so"),
            ("linux-arm64", "libcontroller.so"),
            ("linux-musl-x64", "libcontroller.so"),
            ("osx-arm64", "libcontroller.dylib"),
            ("win-x64", "controller.dll"),
        ];
        for (text, file) in cases {
            let rid = Rid::parse(text).unwrap();
            assert_eq!(rid.as_str(), text);
            assert_eq!(rid.library_file_name("controller"), file);
        }
    }

    #[test]
    fn malformed_or_unknown_rids_are_rejected() {
        for text in [
            "",
            "linux",
            "x64",
            "linux-amd64",
            "ubuntu.22.04-x64",
            "Linux-x64",
            "linux-x64/..",
        ] {
            let err = Rid::parse(text).unwrap_err().to_string();
            assert!(err.starts_with("unknown rid"), "{text}: {err}");
        }
    }
}
