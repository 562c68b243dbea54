mod support;

use serde_json::json;
use support::{Canned, Event, Plugin, ScriptedHost};

#[test]
fn create_through_dlopen_calls_connect_and_replies_connected() {
    let plugin = Plugin::load();
    let host = ScriptedHost::new();
    host.on(
        "Connect",
        Canned::Ok(r#"{"id":"c-1","status":"connected"}"#.into()),
    );
    let event = Event::json(&json!({"command":"create","url":"wss://x/ws","auto_reconnect":true}))
        .ext("correlationid", "corr-1")
        .subject("s-1");
    let reply = plugin.call(&host, &event.encode());
    assert_eq!(
        reply.data,
        json!({"command":"create","success":true,"id":"c-1","status":"connected","message":"connected"})
    );
    assert_eq!(
        reply.extensions,
        [("correlationid".to_owned(), "corr-1".to_owned())]
    );
    let calls = host.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].service, "websocketmanager");
    assert_eq!(
        calls[0].body,
        json!({"url":"wss://x/ws","auto_reconnect":true})
    );
}
