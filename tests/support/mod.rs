//! Test support for driving the built `libcontroller.so` through its raw C ABI, the way WorkManager
//! does: the scripted host of [`host`] (`dlopen`, a `VirtufinHost` table of `extern "C"` callbacks,
//! `malloc`'d gateway replies), FlatBuffer events in, `WorkerResponse`s out. Shared by the
//! integration tests and the `process` benchmark.
#![allow(dead_code)] // each test binary uses a different part

pub mod host;
pub mod host_sim;
pub mod live_wsm;

use controller::generated::{CloudEvent, CloudEventArgs, Extension, ExtensionArgs, WorkerResponse};
use flatbuffers::FlatBufferBuilder;
use serde_json::Value;

#[allow(unused_imports)] // each test binary uses a different part
pub use host::{lib_path, Canned, Plugin, ScriptedHost};

impl Plugin {
    /// Calls `Process` with `host` and decodes the reply, released already with `FreeResult`.
    pub fn call(&self, host: &ScriptedHost, input: &[u8]) -> Reply {
        let (rc, bytes) = self.call_raw(host.table(), input.as_ptr(), input.len() as i32);
        assert_eq!(rc, 0, "Process returned {rc}");
        Reply::parse(&bytes.expect("Process returned 0 but no buffer"))
    }
}

/// A command event as WorkManager would encode it.
#[derive(Clone, Debug, Default)]
pub struct Event {
    pub id: Option<String>,
    pub subject: Option<String>,
    pub data: Vec<u8>,
    pub extensions: Vec<(String, String)>,
}

impl Event {
    pub fn json(data: &Value) -> Event {
        Event {
            id: Some("evt-1".into()),
            data: data.to_string().into_bytes(),
            ..Event::default()
        }
    }

    pub fn raw(data: &[u8]) -> Event {
        Event {
            id: Some("evt-1".into()),
            data: data.to_vec(),
            ..Event::default()
        }
    }

    pub fn ext(mut self, name: &str, value: &str) -> Event {
        self.extensions.push((name.into(), value.into()));
        self
    }

    pub fn subject(mut self, subject: &str) -> Event {
        self.subject = Some(subject.into());
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let exts: Vec<_> = self
            .extensions
            .iter()
            .map(|(n, v)| {
                let args = ExtensionArgs {
                    name: Some(fbb.create_string(n)),
                    value: Some(fbb.create_string(v)),
                };
                Extension::create(&mut fbb, &args)
            })
            .collect();
        let args = CloudEventArgs {
            id: self.id.as_deref().map(|s| fbb.create_string(s)),
            type_: Some(fbb.create_string("command.websocketmanagercontroller")),
            source: Some(fbb.create_string("urn:test")),
            specversion: Some(fbb.create_string("1.0")),
            datacontenttype: Some(fbb.create_string("application/json")),
            subject: self.subject.as_deref().map(|s| fbb.create_string(s)),
            data: Some(fbb.create_vector(&self.data)),
            extensions: Some(fbb.create_vector(&exts)),
            ..CloudEventArgs::default()
        };
        let root = CloudEvent::create(&mut fbb, &args);
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }
}

/// A decoded `WorkerResponse` and its reply event.
#[derive(Clone, Debug)]
pub struct Reply {
    pub id: Option<String>,
    pub event_type: Option<String>,
    pub source: Option<String>,
    pub specversion: Option<String>,
    pub datacontenttype: Option<String>,
    pub subject: Option<String>,
    pub time: Option<String>,
    pub extensions: Vec<(String, String)>,
    pub data: Value,
    pub error_message: Option<String>,
}

impl Reply {
    pub fn parse(bytes: &[u8]) -> Reply {
        let resp =
            flatbuffers::root::<WorkerResponse>(bytes).expect("reply is a valid WorkerResponse");
        let ev = resp.result_event().expect("reply has a result_event");
        let data = ev.data().map(|d| d.bytes()).unwrap_or_default();
        Reply {
            id: ev.id().map(str::to_owned),
            event_type: ev.type_().map(str::to_owned),
            source: ev.source().map(str::to_owned),
            specversion: ev.specversion().map(str::to_owned),
            datacontenttype: ev.datacontenttype().map(str::to_owned),
            subject: ev.subject().map(str::to_owned),
            time: ev.time().map(str::to_owned),
            extensions: ev
                .extensions()
                .into_iter()
                .flatten()
                .map(|e| {
                    (
                        e.name().unwrap_or_default().to_owned(),
                        e.value().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
            data: serde_json::from_slice(data).expect("reply data is JSON"),
            error_message: resp.error_message().map(str::to_owned),
        }
    }

    pub fn success(&self) -> bool {
        self.data["success"] == Value::Bool(true)
    }

    pub fn code(&self) -> &str {
        self.data["code"].as_str().unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.data["message"].as_str().unwrap_or("")
    }
}
