//! Command JSON → typed command → WSM calls → reply `data` JSON. Knows no FFI and no FlatBuffers.
//!
//! Input is `{"command": "<name>", ...fields}` (or a JSON string holding such an object). Names are
//! case-insensitive and `-`/`_` are interchangeable. Unknown fields are ignored so that newer callers
//! work with this worker; known fields of the wrong type are refused with a message naming them.
//!
//! This file is the entry point and the command names; the three steps live apart: `parse.rs`
//! (JSON → a validated command), `run.rs` (command → WSM calls) and `reply.rs` (outcome → `data`).

mod parse;
mod reply;
mod run;

use crate::gateway::{Transport, Wsm};
use crate::state::WorkerState;

use parse::{command_name, parse_command, parse_object, Fields};
pub use reply::{Extra, Extras, Reply};
use run::run;

/// Everything a command may use during one `Process` call.
pub struct Context<'a, T: Transport + ?Sized> {
    pub wsm: Wsm<'a, T>,
    pub worker: &'a WorkerState,
}

/// The commands of SPEC section 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandName {
    Create,
    Subscribe,
    Unsubscribe,
    Publish,
    StopPublish,
    SendRaw,
    Send,
    List,
    Disconnect,
    SetTag,
    GetTag,
    SetTags,
    GetTags,
    Rotate,
    Stop,
}

impl CommandName {
    const ALL: [CommandName; 15] = [
        CommandName::Create,
        CommandName::Subscribe,
        CommandName::Unsubscribe,
        CommandName::Publish,
        CommandName::StopPublish,
        CommandName::SendRaw,
        CommandName::Send,
        CommandName::List,
        CommandName::Disconnect,
        CommandName::SetTag,
        CommandName::GetTag,
        CommandName::SetTags,
        CommandName::GetTags,
        CommandName::Rotate,
        CommandName::Stop,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandName::Create => "create",
            CommandName::Subscribe => "subscribe",
            CommandName::Unsubscribe => "unsubscribe",
            CommandName::Publish => "publish",
            CommandName::StopPublish => "stop_publish",
            CommandName::SendRaw => "send_raw",
            CommandName::Send => "send",
            CommandName::List => "list",
            CommandName::Disconnect => "disconnect",
            CommandName::SetTag => "set_tag",
            CommandName::GetTag => "get_tag",
            CommandName::SetTags => "set_tags",
            CommandName::GetTags => "get_tags",
            CommandName::Rotate => "rotate",
            CommandName::Stop => "stop",
        }
    }

    /// Case-insensitive, with `-` and `_` interchangeable: `Stop-Publish` is `stop_publish`.
    pub fn parse(raw: &str) -> Option<CommandName> {
        let raw = raw.trim();
        Self::ALL.into_iter().find(|name| {
            let canonical = name.as_str().as_bytes();
            raw.len() == canonical.len()
                && raw.bytes().zip(canonical).all(|(got, &want)| {
                    got.to_ascii_lowercase() == want || (got == b'-' && want == b'_')
                })
        })
    }
}

/// Runs one command event's `data` against WSM and returns the reply.
pub fn execute<T: Transport + ?Sized>(data: &[u8], ctx: &Context<'_, T>) -> Reply {
    let (object, text) = match parse_object(data) {
        Ok(parsed) => parsed,
        Err(e) => return Reply::error("error", e),
    };
    let name = match command_name(&object) {
        Ok(name) => name,
        Err(e) => return Reply::error("error", e),
    };
    let fields = Fields {
        object: &object,
        text: &text,
    };
    let outcome = parse_command(name, &fields, ctx.wsm.compat()).and_then(|cmd| run(cmd, ctx));
    Reply {
        command: name.as_str(),
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_are_case_and_dash_insensitive() {
        assert_eq!(
            CommandName::parse("Stop-Publish"),
            Some(CommandName::StopPublish)
        );
        assert_eq!(CommandName::parse("SEND_RAW"), Some(CommandName::SendRaw));
        assert_eq!(CommandName::parse(" list "), Some(CommandName::List));
        assert_eq!(CommandName::parse("stoppublish"), None);
        assert_eq!(CommandName::parse("lists"), None);
        for name in CommandName::ALL {
            assert_eq!(CommandName::parse(name.as_str()), Some(name));
        }
    }
}
