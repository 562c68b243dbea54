//! Named presets of venue options (SPEC 9, "Profiles"): the shipped `profiles.toml`, plus an
//! operator's file (`--profiles FILE`) that adds profiles or replaces shipped ones by name. A bad
//! file stops `wsm serve` at start with the file, line and field, never a connection later.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::options::{
    Decompress, Keepalive, Matcher, OutboundRate, ReplyRule, SequenceRule, VenueOptions,
};

/// The shipped profiles, compiled in so the binary needs no data directory.
const SHIPPED: &str = include_str!("../../profiles.toml");
/// Longest profile name.
const MAX_NAME: usize = 64;

/// One profile as a file writes it: a line about it and the options it sets.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(default)]
    about: String,
    keepalive: Option<Keepalive>,
    reply: Option<ReplyRule>,
    outbound_rate: Option<OutboundRate>,
    decompress: Option<Decompress>,
    notice: Option<Matcher>,
    sequence: Option<SequenceRule>,
    redundancy: Option<u8>,
    max_lifetime_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub about: String,
    pub options: VenueOptions,
    /// Where it was defined: `profiles.toml (shipped)` or the operator's file.
    pub source: String,
}

/// A profile file that cannot be used: which file, where, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("profiles file {file}: {detail}")]
pub struct ProfileError {
    pub file: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Profiles {
    by_name: BTreeMap<String, Profile>,
}

impl Default for Profiles {
    fn default() -> Self {
        Profiles::shipped()
    }
}

impl Profiles {
    /// The profiles that ship with wsm. The file is checked by a test, so this cannot fail in a
    /// release; were it broken anyway, wsm would run with none rather than not at all.
    pub fn shipped() -> Profiles {
        let mut profiles = Profiles {
            by_name: BTreeMap::new(),
        };
        if let Err(e) = profiles.add_text(SHIPPED, "profiles.toml (shipped)") {
            tracing::error!(error = %e, "the shipped venue profiles are unreadable; none are available");
        }
        profiles
    }

    /// The shipped profiles plus those of `path`, which win by name.
    pub fn with_file(path: &Path) -> Result<Profiles, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError {
            file: path.display().to_string(),
            detail: format!("cannot be read: {e}"),
        })?;
        let mut profiles = Profiles::shipped();
        profiles.add_text(&text, &path.display().to_string())?;
        Ok(profiles)
    }

    /// Parses `text` and adds its profiles (replacing same-named ones).
    pub fn add_text(&mut self, text: &str, file: &str) -> Result<(), ProfileError> {
        let err = |detail: String| ProfileError {
            file: file.to_owned(),
            detail,
        };
        let entries: BTreeMap<String, Entry> =
            toml::from_str(text).map_err(|e| err(toml_error(text, &e)))?;
        for (name, entry) in entries {
            let line = line_of_table(text, &name);
            let at = line.map(|l| format!("line {l}, ")).unwrap_or_default();
            if name.is_empty()
                || name.len() > MAX_NAME
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(err(format!(
                    "{at}profile name {name:?} must be 1 to {MAX_NAME} characters of a-z, 0-9 and -"
                )));
            }
            let options = VenueOptions {
                keepalive: entry.keepalive,
                reply: entry.reply,
                outbound_rate: entry.outbound_rate,
                decompress: entry.decompress,
                notice: entry.notice,
                sequence: entry.sequence,
                redundancy: entry.redundancy,
                max_lifetime_ms: entry.max_lifetime_ms,
            };
            options
                .validate()
                .map_err(|e| err(format!("{at}profile {name}: {e}")))?;
            self.by_name.insert(
                name,
                Profile {
                    about: entry.about,
                    options,
                    source: file.to_owned(),
                },
            );
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Profile)> {
        self.by_name.iter().map(|(n, p)| (n.as_str(), p))
    }

    /// What a connection runs: the profile's options with the request's on top, validated.
    /// The error is what Connect returns as `INVALID_ARGUMENT`.
    pub fn resolve(
        &self,
        profile: Option<&str>,
        overrides: &VenueOptions,
    ) -> Result<VenueOptions, String> {
        overrides.validate()?;
        let Some(name) = profile.filter(|n| !n.is_empty()) else {
            return Ok(overrides.clone());
        };
        let Some(found) = self.get(name) else {
            let known: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown profile {name:?}; known profiles: {} (wsm profiles lists what each sets)",
                known.join(", ")
            ));
        };
        // Both sides are valid and no rule spans two options, so the merge is too.
        Ok(overrides.over(&found.options))
    }
}

/// toml's message names the line and column and the field; keep it, in one line.
fn toml_error(_text: &str, e: &toml::de::Error) -> String {
    e.to_string()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The 1-based line of `[name]` (or the first `[name.`), for errors found after parsing.
fn line_of_table(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim();
            line == format!("[{name}]") || line.starts_with(&format!("[{name}."))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_has_every_named_venue_and_is_valid() {
        let mut profiles = Profiles {
            by_name: BTreeMap::new(),
        };
        profiles.add_text(SHIPPED, "shipped").unwrap();
        for name in [
            "binance-spot",
            "binance-usdm",
            "okx",
            "bybit",
            "htx",
            "deribit",
            "coinbase",
            "kraken",
            "bitmex",
            "bitfinex",
        ] {
            let p = profiles
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing"));
            assert!(!p.about.is_empty(), "{name} has no about line");
            assert!(!p.options.is_empty(), "{name} sets nothing");
        }
        // Every rule carries its source: a comment naming one precedes each option line.
        for (i, line) in SHIPPED.lines().enumerate() {
            let option = [
                "keepalive",
                "reply",
                "outbound_rate",
                "decompress",
                "notice",
                "sequence",
                "redundancy",
                "max_lifetime_ms",
            ]
            .iter()
            .any(|o| line.starts_with(&format!("{o} =")));
            if option {
                let before: Vec<&str> = SHIPPED.lines().take(i).collect();
                let comment: Vec<&&str> = before
                    .iter()
                    .rev()
                    .take_while(|l| l.starts_with('#'))
                    .collect();
                assert!(
                    comment.iter().any(|l| l.contains("Source")),
                    "line {}: {line} has no source comment",
                    i + 1
                );
            }
        }
    }

    #[test]
    fn a_bad_file_names_file_line_and_field() {
        let mut p = Profiles::shipped();
        let e = p
            .add_text(
                "[mine]\nkeepalive = { message = \"ping\", interval_ms = 0 }\n",
                "ops.toml",
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ops.toml") && e.contains("line 1") && e.contains("keepalive.interval_ms"),
            "{e}"
        );
        let e = p
            .add_text("[mine]\nabout = \"x\"\n\nkeepalives = 1\n", "ops.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ops.toml") && e.contains("line 4") && e.contains("keepalives"),
            "{e}"
        );
        let e = p
            .add_text("[Bad_Name]\n", "ops.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Bad_Name"), "{e}");
    }

    #[test]
    fn a_file_replaces_a_shipped_profile_by_name_and_requests_override_it() {
        let mut p = Profiles::shipped();
        p.add_text(
            "[okx]\nabout = \"mine\"\ndecompress = \"zlib\"\n",
            "ops.toml",
        )
        .unwrap();
        assert_eq!(p.get("okx").unwrap().options.keepalive, None);
        let over = VenueOptions {
            decompress: Some(Decompress::Gzip),
            ..Default::default()
        };
        assert_eq!(
            p.resolve(Some("okx"), &over).unwrap().decompress,
            Some(Decompress::Gzip)
        );
        let e = p
            .resolve(Some("nope"), &VenueOptions::default())
            .unwrap_err();
        assert!(
            e.contains("unknown profile \"nope\"") && e.contains("binance-spot"),
            "{e}"
        );
    }
}
