//! The client commands: each is one gRPC call to a running server, its answer printed for people
//! (tables, plain values) or, with `--json`, for scripts.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use wsm::api::auth::API_KEY_HEADER;
use wsm::api::status::code_name;
use wsm::proto::{self, web_socket_manager_client::WebSocketManagerClient};

#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The server's gRPC address.
    #[arg(
        long,
        env = "WSM_SERVER",
        default_value = "http://127.0.0.1:5002",
        global = true
    )]
    server: String,
    /// API key sent in `x-api-key`.
    #[arg(long, env = "WSM_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// Print nothing on success (commands that change something say what they did otherwise).
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
}

impl Target {
    /// One line saying what a command did, unless `--quiet`.
    fn done(&self, line: std::fmt::Arguments<'_>) {
        if !self.quiet {
            println!("{line}");
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Open a connection; prints its id and status.
    Connect {
        #[command(flatten)]
        target: Target,
        /// ws:// or wss:// URL.
        url: String,
        /// Reconnect after a drop, with backoff.
        #[arg(long)]
        auto_reconnect: bool,
        /// Tag KEY=VALUE (repeatable).
        #[arg(long = "tag", value_parser = key_value)]
        tags: Vec<(String, String)>,
        /// Handshake header NAME=VALUE (repeatable; never listed or logged).
        #[arg(long = "header", value_parser = key_value)]
        headers: Vec<(String, String)>,
        /// Subprotocol offer (repeatable, in preference order).
        #[arg(long = "subprotocol")]
        subprotocols: Vec<String>,
        /// Message sent after every (re)connect (repeatable, in order; JSON text).
        #[arg(long = "on-connect")]
        on_connect: Vec<String>,
        /// Keepalive Ping interval for this connection, in ms (0 = the server's).
        #[arg(long, default_value_t = 0)]
        ping_interval_ms: i32,
        /// Venue profile (`wsm profiles` lists them), e.g. okx.
        #[arg(long)]
        profile: Option<String>,
        /// Venue options as JSON, the shape of the profiles file, e.g.
        /// '{"keepalive":{"message":"ping","interval_ms":20000,"pong":{"text":"pong"}}}';
        /// each option replaces the profile's option of the same name.
        #[arg(long, value_parser = venue_json)]
        venue: Option<Box<wsm::venue::VenueOptions>>,
        /// Standing legs: 1, or 2 for two sockets arbitrated live (a drop of either loses
        /// nothing); replaces `redundancy` of --venue and of the profile.
        #[arg(long)]
        redundancy: Option<u8>,
        /// Rotate make-before-break this long after a leg opened, in ms; replaces
        /// `max_lifetime_ms` of --venue and of the profile.
        #[arg(long)]
        max_lifetime_ms: Option<u64>,
    },
    /// List connections (all instances), optionally filtered by tags.
    List {
        #[command(flatten)]
        target: Target,
        /// Only connections with tag KEY=VALUE (repeatable; all must match).
        #[arg(long = "tag", value_parser = key_value)]
        tags: Vec<(String, String)>,
        /// Print the proto3-JSON response instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Close a connection and remove its record.
    Disconnect {
        #[command(flatten)]
        target: Target,
        id: String,
    },
    /// Publish a connection's frames to a topic.
    Publish {
        #[command(flatten)]
        target: Target,
        id: String,
        topic: String,
    },
    /// Stop publishing a connection's frames.
    StopPublish {
        #[command(flatten)]
        target: Target,
        id: String,
    },
    /// Send a correlated request and print the response.
    Send {
        #[command(flatten)]
        target: Target,
        id: String,
        message: String,
        #[arg(long, default_value = "application/json")]
        content_type: String,
        /// Wait this long for the response, in ms (0 = the server's default).
        #[arg(long, default_value_t = 0)]
        timeout_ms: i32,
    },
    /// Send a message without waiting for a response.
    SendRaw {
        #[command(flatten)]
        target: Target,
        id: String,
        message: String,
        #[arg(long, default_value = "application/json")]
        content_type: String,
        /// Re-send after every reconnect (e.g. a SUBSCRIBE).
        #[arg(long)]
        replay: bool,
    },
    /// Replace a connection's socket make-before-break: a new one opens and replays, the old one
    /// closes once the two overlap (or after 10 s, announcing a gap); prints how it went.
    Rotate {
        #[command(flatten)]
        target: Target,
        id: String,
    },
    /// Show a connection's tags; `KEY` shows one; `KEY=VALUE`s set them.
    Tag {
        #[command(flatten)]
        target: Target,
        id: String,
        /// `KEY` to read one tag, or one or more `KEY=VALUE` to set.
        items: Vec<String>,
    },
    /// Stream the events published to a topic, as they are published.
    Tail {
        #[command(flatten)]
        target: Target,
        topic: String,
        /// Print each CloudEvent's JSON instead of `seq`, `epoch`, connection and data.
        #[arg(long)]
        json: bool,
        /// Exit after this many events (0 = never).
        #[arg(long, short = 'c', default_value_t = 0)]
        count: u64,
    },
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

type Client =
    WebSocketManagerClient<tonic::service::interceptor::InterceptedService<Channel, ApiKeyHeader>>;

/// Adds the API key to every call.
#[derive(Clone)]
pub struct ApiKeyHeader(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for ApiKeyHeader {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(key) = &self.0 {
            request.metadata_mut().insert(API_KEY_HEADER, key.clone());
        }
        Ok(request)
    }
}

impl Target {
    async fn client(&self) -> Result<Client, Status> {
        // `wsm serve` prints `127.0.0.1:5002`: taken as plain-text gRPC (h2c) as it is.
        let server = if self.server.contains("://") {
            self.server.clone()
        } else {
            format!("http://{}", self.server)
        };
        let endpoint = Endpoint::from_shared(server)
            .map_err(|e| Status::invalid_argument(format!("--server {:?}: {e}", self.server)))?
            .connect_timeout(Duration::from_secs(5));
        let channel = endpoint.connect().await.map_err(|e| {
            Status::unavailable(format!(
                "cannot reach the WebSocket Manager at {}: {e}",
                self.server
            ))
        })?;
        let key = match &self.api_key {
            Some(key) => Some(key.parse().map_err(|_| {
                Status::invalid_argument("--api-key holds characters a header cannot carry")
            })?),
            None => None,
        };
        Ok(
            WebSocketManagerClient::with_interceptor(channel, ApiKeyHeader(key))
                .max_decoding_message_size(usize::MAX),
        )
    }
}

impl ClientCommand {
    pub async fn run(self) -> ExitCode {
        match self.execute().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(status) => {
                eprintln!("error: {}: {}", code_name(status.code()), status.message());
                ExitCode::from(1)
            }
        }
    }

    async fn execute(self) -> Result<(), Status> {
        match self {
            ClientCommand::Connect {
                target,
                url,
                auto_reconnect,
                tags,
                headers,
                subprotocols,
                on_connect,
                ping_interval_ms,
                profile,
                venue,
                redundancy,
                max_lifetime_ms,
            } => {
                let mut req = proto::ConnectRequest {
                    url,
                    auto_reconnect,
                    tags: tags.into_iter().collect(),
                    headers: headers.into_iter().collect(),
                    subprotocols,
                    on_connect: on_connect
                        .into_iter()
                        .map(|m| proto::OutboundMessage {
                            message: m.into_bytes(),
                            content_type: "application/json".into(),
                        })
                        .collect(),
                    ping_interval_ms,
                    profile: profile.unwrap_or_default(),
                    ..Default::default()
                };
                let venue = continuity(venue, redundancy, max_lifetime_ms)?;
                if let Some(venue) = &venue {
                    wsm::api::set_venue(&mut req, venue);
                }
                let resp = target.client().await?.connect(req).await?.into_inner();
                println!("{} {}", resp.id, resp.status);
            }
            ClientCommand::List { target, tags, json } => {
                let filters = tags
                    .into_iter()
                    .map(|(key, value)| proto::TagFilter { key, value })
                    .collect();
                let resp = target
                    .client()
                    .await?
                    .list(proto::ListRequest { filters })
                    .await?
                    .into_inner();
                if json {
                    println!("{}", list_json(&resp));
                } else {
                    print!("{}", table(&resp.connections));
                }
            }
            ClientCommand::Disconnect { target, id } => {
                target
                    .client()
                    .await?
                    .disconnect(proto::DisconnectRequest { id: id.clone() })
                    .await?;
                target.done(format_args!("disconnected {id}"));
            }
            ClientCommand::Publish { target, id, topic } => {
                let req = proto::StartPublishRequest {
                    id: id.clone(),
                    topic: topic.clone(),
                };
                target.client().await?.start_publish(req).await?;
                target.done(format_args!("publishing {id} to {topic}"));
            }
            ClientCommand::StopPublish { target, id } => {
                target
                    .client()
                    .await?
                    .stop_publish(proto::StopPublishRequest { id: id.clone() })
                    .await?;
                target.done(format_args!("stopped publishing {id}"));
            }
            ClientCommand::Send {
                target,
                id,
                message,
                content_type,
                timeout_ms,
            } => {
                let req = proto::SendRequest {
                    id,
                    message: message.into_bytes(),
                    timeout_ms,
                    content_type,
                };
                let resp = target.client().await?.send(req).await?.into_inner();
                print_bytes(&resp.response);
            }
            ClientCommand::SendRaw {
                target,
                id,
                message,
                content_type,
                replay,
            } => {
                let bytes = message.len();
                let req = proto::SendRawRequest {
                    id: id.clone(),
                    message: message.into_bytes(),
                    content_type,
                    replay_on_reconnect: replay,
                };
                target.client().await?.send_raw(req).await?;
                let replayed = if replay {
                    ", sent again after every reconnect"
                } else {
                    ""
                };
                target.done(format_args!("sent {bytes} bytes to {id}{replayed}"));
            }
            ClientCommand::Rotate { target, id } => {
                let resp = target
                    .client()
                    .await?
                    .rotate(proto::RotateRequest { id: id.clone() })
                    .await?
                    .into_inner();
                println!("{}", rotated(&id, &resp));
            }
            ClientCommand::Tag { target, id, items } => tag(target, id, items).await?,
            ClientCommand::Tail {
                target,
                topic,
                json,
                count,
            } => tail(target, topic, json, count).await?,
        }
        Ok(())
    }
}

async fn tag(target: Target, id: String, items: Vec<String>) -> Result<(), Status> {
    let mut client = target.client().await?;
    match items.as_slice() {
        [] => {
            let tags = client
                .get_tags(proto::GetTagsRequest { id })
                .await?
                .into_inner()
                .tags;
            let mut tags: Vec<_> = tags.into_iter().collect();
            tags.sort();
            for (k, v) in tags {
                println!("{k}={v}");
            }
        }
        [key] if !key.contains('=') => {
            // GetTag answers "" for a tag that is not set: tell the two apart.
            let tags = client
                .get_tags(proto::GetTagsRequest { id: id.clone() })
                .await?
                .into_inner()
                .tags;
            match tags.get(key) {
                Some(value) => println!("{value}"),
                None => {
                    return Err(Status::not_found(format!(
                        "connection {id} has no tag {key:?}"
                    )))
                }
            }
        }
        items => {
            let mut tags = HashMap::new();
            for item in items {
                let (k, v) = key_value(item).map_err(Status::invalid_argument)?;
                tags.insert(k, v);
            }
            // Set each named tag and keep the others: read, merge, write.
            let mut all = client
                .get_tags(proto::GetTagsRequest { id: id.clone() })
                .await?
                .into_inner()
                .tags;
            let mut set: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            set.sort();
            all.extend(tags);
            client
                .set_tags(proto::SetTagsRequest {
                    id: id.clone(),
                    tags: all,
                })
                .await?;
            target.done(format_args!("tagged {id}: {}", set.join(" ")));
        }
    }
    Ok(())
}

async fn tail(target: Target, topic: String, json: bool, count: u64) -> Result<(), Status> {
    let mut stream = target
        .client()
        .await?
        .subscribe(proto::SubscribeRequest { topic })
        .await?
        .into_inner();
    let mut seen = 0u64;
    let stdout = std::io::stdout();
    loop {
        let event = match stream.message().await {
            Ok(Some(event)) => event,
            Ok(None) => break,
            // The server stopped or the connection broke mid-stream: say so, not "h2 protocol
            // error".
            Err(e) if matches!(e.code(), Code::Unknown | Code::Unavailable) => {
                return Err(Status::unavailable(format!(
                    "the WebSocket Manager at {} went away ({}); the tail ended after {seen} \
                     events",
                    target.server,
                    e.message()
                )));
            }
            Err(e) => return Err(e),
        };
        let mut out = stdout.lock();
        let line = if json {
            event.cloud_event
        } else {
            tail_line(&event)
        };
        // A closed pipe (`wsm tail … | head`) ends the command quietly.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
        seen += 1;
        if count > 0 && seen >= count {
            return Ok(());
        }
    }
    Ok(())
}

/// One event as `wsm tail` prints it: a frame with its numbering, a lifecycle event with its kind,
/// connection, epoch and reason (it has no `seq`).
fn tail_line(event: &proto::PublishedEvent) -> String {
    const LIFECYCLE: &str = "com.virtufin.websocketmanager.lifecycle.";
    let parsed: Option<serde_json::Value> = serde_json::from_str(&event.cloud_event).ok();
    if let Some(kind) = parsed
        .as_ref()
        .and_then(|e| e["type"].as_str())
        .and_then(|t| t.strip_prefix(LIFECYCLE))
    {
        let data = parsed.as_ref().map(|e| &e["data"]);
        let field = |name: &str| {
            data.and_then(|d| d[name].as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let epoch = data.and_then(|d| d["epoch"].as_u64()).unwrap_or_default();
        return format!(
            "{kind} connection={} epoch={epoch} {}",
            field("connection_id"),
            field("reason")
        );
    }
    format!(
        "seq={} epoch={} connection={} {}",
        event.seq,
        event.epoch,
        event.connection_id,
        event_data(&event.cloud_event)
    )
}

/// The event's `data` (text) or `data_base64`, for one-line display.
fn event_data(cloud_event: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(cloud_event) else {
        return cloud_event.to_owned();
    };
    match (value.get("data"), value.get("data_base64")) {
        (Some(serde_json::Value::String(s)), _) => s.clone(),
        (Some(other), _) => other.to_string(),
        (None, Some(b64)) => format!("base64:{}", b64.as_str().unwrap_or_default()),
        (None, None) => cloud_event.to_owned(),
    }
}

fn print_bytes(bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => println!("{text}"),
        Err(_) => {
            use base64::Engine as _;
            println!(
                "base64:{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            );
        }
    }
}

fn list_json(resp: &proto::ListResponse) -> String {
    let rows: Vec<serde_json::Value> = resp
        .connections
        .iter()
        .map(|c| {
            let tags: std::collections::BTreeMap<_, _> = c.tags.iter().collect();
            serde_json::json!({
                "id": c.id, "url": c.url, "status": c.status, "topic": c.topic,
                "instanceId": c.instance_id, "tags": tags, "createdAt": c.created_at,
                "epoch": c.epoch.to_string(),
            })
        })
        .collect();
    serde_json::json!({ "connections": rows }).to_string()
}

/// An aligned table: ID, STATUS, TOPIC, INSTANCE, EPOCH, URL, TAGS.
fn table(connections: &[proto::WebSocketConnection]) -> String {
    let header = ["ID", "STATUS", "TOPIC", "INSTANCE", "EPOCH", "URL", "TAGS"].map(String::from);
    let mut rows = vec![header.to_vec()];
    for c in connections {
        let mut tags: Vec<_> = c.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        tags.sort();
        rows.push(vec![
            c.id.clone(),
            c.status.clone(),
            if c.topic.is_empty() {
                "-".into()
            } else {
                c.topic.clone()
            },
            c.instance_id.clone(),
            c.epoch.to_string(),
            c.url.clone(),
            tags.join(","),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `--venue`: venue options as JSON, checked here so a typo fails before any call.
fn venue_json(text: &str) -> Result<Box<wsm::venue::VenueOptions>, String> {
    let options: wsm::venue::VenueOptions =
        serde_json::from_str(text).map_err(|e| format!("not venue options JSON: {e}"))?;
    options.validate()?;
    Ok(Box::new(options))
}

/// `--redundancy` and `--max-lifetime-ms` folded into the `--venue` options (the flags win),
/// checked like the rest of them.
fn continuity(
    venue: Option<Box<wsm::venue::VenueOptions>>,
    redundancy: Option<u8>,
    max_lifetime_ms: Option<u64>,
) -> Result<Option<Box<wsm::venue::VenueOptions>>, Status> {
    if redundancy.is_none() && max_lifetime_ms.is_none() {
        return Ok(venue);
    }
    let mut venue = venue.unwrap_or_default();
    venue.redundancy = redundancy.or(venue.redundancy);
    venue.max_lifetime_ms = max_lifetime_ms.or(venue.max_lifetime_ms);
    venue.validate().map_err(Status::invalid_argument)?;
    Ok(Some(venue))
}

/// How a rotation went, for people.
fn rotated(id: &str, resp: &proto::RotateResponse) -> String {
    let duplicates = match resp.duplicates {
        1 => "1 duplicate suppressed".to_owned(),
        n => format!("{n} duplicates suppressed"),
    };
    if resp.overlap {
        format!(
            "rotated {id}: overlap proven, {duplicates}, {} ms",
            resp.took_ms
        )
    } else {
        format!(
            "rotated {id}: NO overlap proven within the bound; a gap was announced (the old \
             socket was closed after {} ms, {duplicates}; the epoch moved on)",
            resp.took_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_shows_a_lifecycle_event_by_kind_and_a_frame_by_its_numbering() {
        let lifecycle = proto::PublishedEvent {
            cloud_event: r#"{"type":"com.virtufin.websocketmanager.lifecycle.rotated","data":{"connection_id":"c-1","reason":"overlap proven","epoch":2}}"#.into(),
            ..Default::default()
        };
        assert_eq!(
            tail_line(&lifecycle),
            "rotated connection=c-1 epoch=2 overlap proven"
        );
        let frame = proto::PublishedEvent {
            seq: 7,
            epoch: 1,
            connection_id: "c-1".into(),
            cloud_event: r#"{"type":"x","data":"{\"u\":1}"}"#.into(),
            ..Default::default()
        };
        assert_eq!(tail_line(&frame), r#"seq=7 epoch=1 connection=c-1 {"u":1}"#);
    }

    #[test]
    fn a_rotation_reads_as_proven_or_as_an_announced_gap() {
        let proven = proto::RotateResponse {
            overlap: true,
            duplicates: 12,
            took_ms: 143,
        };
        assert_eq!(
            rotated("c-1", &proven),
            "rotated c-1: overlap proven, 12 duplicates suppressed, 143 ms"
        );
        let gap = proto::RotateResponse {
            overlap: false,
            duplicates: 1,
            took_ms: 10_012,
        };
        assert_eq!(
            rotated("c-1", &gap),
            "rotated c-1: NO overlap proven within the bound; a gap was announced (the old socket \
             was closed after 10012 ms, 1 duplicate suppressed; the epoch moved on)"
        );
    }
}
