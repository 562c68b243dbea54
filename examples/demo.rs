//! The plugin on its own: loads the built `libcontroller.so` the way WorkManager does and walks one
//! worker through create → subscribe → publish → list → stop against a scripted gateway, printing each
//! command, the WSM calls it turned into, and the reply. Run it with `scripts/demo.sh`.

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::{json, Value};
use support::{Canned, Event, Plugin, ScriptedHost};

const CONNECTION: &str = "8d3c1f0e-2b7a-4c59-9e61-3a5d2f4b7c10";

fn main() {
    let plugin = Plugin::load();
    let host = ScriptedHost::new();
    host.on(
        "Connect",
        Canned::Ok(format!(r#"{{"id":"{CONNECTION}","status":"connected"}}"#)),
    )
    .on("SendRaw", Canned::Ok("{}".into()))
    .on("StartPublish", Canned::Ok("{}".into()))
    .on("Disconnect", Canned::Ok("{}".into()))
    .on(
        "List",
        Canned::Ok(
            json!({"connections": [{
                "id": CONNECTION, "url": "wss://stream.binance.com:9443/stream",
                "status": "connected", "topic": "act.exchange.binance.orderbook.update",
                "instanceId": "wsm-0", "tags": {"venue": "binance"}
            }]})
            .to_string(),
        ),
    );

    let steps = [
        json!({"command": "create", "url": "wss://stream.binance.com:9443/stream",
               "auto_reconnect": true, "tags": {"venue": "binance"}}),
        json!({"command": "subscribe", "id": CONNECTION,
               "params": ["btcusdt@depth@100ms", "ethusdt@depth@100ms"]}),
        json!({"command": "publish", "id": CONNECTION,
               "topic": "act.exchange.binance.orderbook.update"}),
        json!({"command": "list"}),
        json!({"command": "nonsense"}),
        json!({"command": "stop"}),
    ];
    let mut failed = false;
    for (n, command) in steps.iter().enumerate() {
        let event = Event::json(command).ext("correlationid", &format!("demo-{}", n + 1));
        let reply = plugin.call(&host, &event.encode());
        println!("→ {command}");
        for call in host.take_calls() {
            println!(
                "  gateway {}.{} {}",
                call.service,
                call.method,
                show(&call.body)
            );
        }
        let correlation = reply
            .extensions
            .iter()
            .find(|(name, _)| name == "correlationid")
            .map(|(_, value)| value.as_str())
            .unwrap_or("-");
        println!(
            "← {} [correlationid {correlation}] {}\n",
            reply.event_type.as_deref().unwrap_or("?"),
            reply.data
        );
        // The unknown command is expected to fail; everything else must succeed.
        let expect_success = command["command"] != "nonsense";
        failed |= reply.success() != expect_success;
    }
    if failed {
        eprintln!("demo: a step did not reply as expected");
        std::process::exit(1);
    }
}

/// Request bodies with their base64 `message` decoded, so the subscription frame is readable.
fn show(body: &Value) -> String {
    let mut body = body.clone();
    if let Some(message) = body.get("message").and_then(Value::as_str) {
        if let Some(text) = controller::gateway::decode_bytes(message)
            .and_then(|bytes| String::from_utf8(bytes).ok())
        {
            body["message"] = Value::String(format!("base64({text})"));
        }
    }
    body.to_string()
}
