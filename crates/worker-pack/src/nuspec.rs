//! The NuGet `.nuspec` at the zip root. Newer WorkManager builds read the worker's ABI, library and
//! export names from its `virtufin*` elements instead of `manifest.json`, so the package carries both.

use crate::error::PackError;

/// NuGet's own limit on package ids.
const MAX_ID_LEN: usize = 100;

/// What goes into `<metadata>`.
#[derive(Debug, Clone)]
pub struct Nuspec<'a> {
    pub id: &'a str,
    pub version: &'a str,
    pub authors: &'a str,
    pub description: &'a str,
    pub abi_version: i64,
    pub library: &'a str,
    pub entry_point: &'a str,
    pub free_result: &'a str,
}

impl Nuspec<'_> {
    /// The file name at the zip root: NuGet names the nuspec after the package id.
    pub fn file_name(&self) -> String {
        format!("{}.nuspec", self.id)
    }

    /// Renders the XML. Element order is fixed so the bytes, and with them the zip, are reproducible.
    pub fn render(&self) -> String {
        let fields = [
            ("id", escape(self.id)),
            ("version", escape(self.version)),
            ("authors", escape(self.authors)),
            ("description", escape(self.description)),
            ("virtufinAbiVersion", self.abi_version.to_string()),
            ("virtufinLibrary", escape(self.library)),
            ("virtufinEntryPoint", escape(self.entry_point)),
            ("virtufinFreeResult", escape(self.free_result)),
        ];
        let mut xml = String::from(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
             <package xmlns=\"http://schemas.microsoft.com/packaging/2013/05/nuspec.xsd\">\n  <metadata>\n",
        );
        for (name, value) in fields {
            xml.push_str(&format!("    <{name}>{value}</{name}>\n"));
        }
        xml.push_str("  </metadata>\n</package>\n");
        xml
    }
}

/// NuGet ids: letters, digits, `_`, `.`, `-`; no leading, trailing or doubled separator.
pub fn check_package_id(id: &str) -> Result<(), PackError> {
    let reject = |detail: String| PackError::Nuspec {
        field: "package id",
        detail,
    };
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(reject(format!(
            "{id:?} must be 1 to {MAX_ID_LEN} characters"
        )));
    }
    let is_sep = |c: char| c == '.' || c == '-';
    let well_formed = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || is_sep(c))
        && !id.starts_with(is_sep)
        && !id.ends_with(is_sep)
        && !id.contains("..")
        && !id.contains("--")
        && !id.contains(".-")
        && !id.contains("-.");
    if !well_formed {
        return Err(reject(format!(
            "{id:?} may only use letters, digits, '_', and single '.' or '-' between them"
        )));
    }
    Ok(())
}

/// NuGet versions (SemVer 2, optionally four-part): start with a digit, then digits, letters, `.`, `-`, `+`.
pub fn check_version(version: &str) -> Result<(), PackError> {
    let ok = version.starts_with(|c: char| c.is_ascii_digit())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(PackError::Nuspec {
            field: "version",
            detail: format!("{version:?} is not a NuGet version such as 0.1.0 or 1.2.0-beta.1"),
        })
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_is_xml_escaped() {
        assert_eq!(escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
    }

    #[test]
    fn package_ids_follow_nuget_rules() {
        for ok in ["Virtufin.Worker.WebSocketManagerController", "a", "a_b-c.d"] {
            check_package_id(ok).unwrap();
        }
        for bad in ["", ".a", "a.", "a..b", "a/b", "a b", "ä", &"x".repeat(101)] {
            assert!(check_package_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn versions_follow_nuget_rules() {
        for ok in ["0.1.0", "1.2.3.4", "1.0.0-beta.1+sha.abc"] {
            check_version(ok).unwrap();
        }
        for bad in ["", "v1.0", "1.0 ", "1.0<"] {
            assert!(check_version(bad).is_err(), "{bad:?}");
        }
    }
}
