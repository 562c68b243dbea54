//! The command fields: missing, of the wrong type, bad base64, `message` beside `text`.

use serde_json::json;

use super::common::assert_refused;

#[test]
fn missing_required_fields_get_a_bad_request_reply_naming_the_field() {
    let cases = [
        (json!({"command":"create"}), "create", "Missing 'url' field"),
        (
            json!({"command":"create","url":null}),
            "create",
            "Missing 'url' field",
        ),
        (
            json!({"command":"create","url":" "}),
            "create",
            "Field 'url' must not be empty",
        ),
        (
            json!({"command":"subscribe","id":"c"}),
            "subscribe",
            "Field 'params' must list at least one stream",
        ),
        (
            json!({"command":"unsubscribe","id":"c","params":[]}),
            "unsubscribe",
            "Field 'params' must list at least one stream",
        ),
        (
            json!({"command":"subscribe","params":["a"]}),
            "subscribe",
            "Missing 'id' field",
        ),
        (
            json!({"command":"unsubscribe","params":["a"],"id":null}),
            "unsubscribe",
            "Missing 'id' field",
        ),
        (
            json!({"command":"publish","id":"c"}),
            "publish",
            "Missing 'topic' field",
        ),
        (
            json!({"command":"publish","topic":"t"}),
            "publish",
            "Missing 'id' field",
        ),
        (
            json!({"command":"publish","id":"c","topic":""}),
            "publish",
            "Field 'topic' must not be empty",
        ),
        (
            json!({"command":"stop_publish"}),
            "stop_publish",
            "Missing 'id' field",
        ),
        (
            json!({"command":"send_raw","text":"x"}),
            "send_raw",
            "Missing 'id' field",
        ),
        (
            json!({"command":"send_raw","id":"c"}),
            "send_raw",
            "Missing 'message' (base64) or 'text' field",
        ),
        (
            json!({"command":"send","id":"c","timeout_ms":10}),
            "send",
            "Missing 'message' (base64) or 'text' field",
        ),
        (
            json!({"command":"send","text":"x"}),
            "send",
            "Missing 'id' field",
        ),
        (
            json!({"command":"disconnect"}),
            "disconnect",
            "Missing 'id' field",
        ),
        (
            json!({"command":"disconnect","id":""}),
            "disconnect",
            "Field 'id' must not be empty",
        ),
        (
            json!({"command":"set_tag","id":"c","key":"k"}),
            "set_tag",
            "Missing 'value' field",
        ),
        (
            json!({"command":"set_tag","id":"c","value":"v"}),
            "set_tag",
            "Missing 'key' field",
        ),
        (
            json!({"command":"set_tag","key":"k","value":"v"}),
            "set_tag",
            "Missing 'id' field",
        ),
        (
            json!({"command":"get_tag","id":"c"}),
            "get_tag",
            "Missing 'key' field",
        ),
        (
            json!({"command":"get_tag","key":"k"}),
            "get_tag",
            "Missing 'id' field",
        ),
        (
            json!({"command":"set_tags","id":"c"}),
            "set_tags",
            "Missing 'tags' field",
        ),
        (
            json!({"command":"set_tags","id":"c","tags":null}),
            "set_tags",
            "Missing 'tags' field",
        ),
        (
            json!({"command":"set_tags","tags":{}}),
            "set_tags",
            "Missing 'id' field",
        ),
        (
            json!({"command":"get_tags"}),
            "get_tags",
            "Missing 'id' field",
        ),
        (json!({"command":"rotate"}), "rotate", "Missing 'id' field"),
        (
            json!({"command":"rotate","id":null}),
            "rotate",
            "Missing 'id' field",
        ),
        (
            json!({"command":"rotate","id":" "}),
            "rotate",
            "Field 'id' must not be empty",
        ),
    ];
    for (data, command, message) in cases {
        assert_refused(data, command, "BAD_REQUEST", message);
    }
}

#[test]
fn wrong_field_types_get_a_bad_request_reply_naming_the_field() {
    let cases = [
        (
            json!({"command":"create","url":"wss://x","auto_reconnect":"yes"}),
            "create",
            "Field 'auto_reconnect' must be a boolean, got a string",
        ),
        (
            json!({"command":"create","url":"wss://x","auto_reconnect":1}),
            "create",
            "Field 'auto_reconnect' must be a boolean, got a number",
        ),
        (
            json!({"command":"create","url":5}),
            "create",
            "Field 'url' must be a string, got a number",
        ),
        (
            json!({"command":"create","url":"wss://x","tags":{"venue":"b","n":1}}),
            "create",
            "Field 'tags.n' must be a string, got a number",
        ),
        (
            json!({"command":"create","url":"wss://x","tags":["a"]}),
            "create",
            "Field 'tags' must be an object of strings, got an array",
        ),
        (
            json!({"command":"create","url":"wss://x","headers":{"h":true}}),
            "create",
            "Field 'headers.h' must be a string, got a boolean",
        ),
        (
            json!({"command":"create","url":"wss://x","subprotocols":"v1"}),
            "create",
            "Field 'subprotocols' must be an array of strings, got a string",
        ),
        (
            json!({"command":"create","url":"wss://x","subprotocols":["v1",2]}),
            "create",
            "Field 'subprotocols[1]' must be a string, got a number",
        ),
        (
            json!({"command":"create","url":"wss://x","on_connect":"hello"}),
            "create",
            "Field 'on_connect' must be an array of messages, got a string",
        ),
        (
            json!({"command":"create","url":"wss://x","on_connect":["ok",5]}),
            "create",
            "Field 'on_connect[1]' must be a string or a JSON object, got a number",
        ),
        (
            json!({"command":"subscribe","id":"c","params":"btcusdt@depth"}),
            "subscribe",
            "Field 'params' must be an array of strings, got a string",
        ),
        (
            json!({"command":"subscribe","id":"c","params":["a",{"b":1}]}),
            "subscribe",
            "Field 'params[1]' must be a string, got an object",
        ),
        (
            json!({"command":"subscribe","id":"c","params":["a"],"request_id":-1}),
            "subscribe",
            "Field 'request_id' must be an integer from 0 to 9223372036854775807, got -1",
        ),
        (
            json!({"command":"subscribe","id":"c","params":["a"],"request_id":"7"}),
            "subscribe",
            "Field 'request_id' must be an integer from 0 to 9223372036854775807, got \"7\"",
        ),
        (
            json!({"command":"subscribe","id":"c","params":["a"],"request_id":1.5}),
            "subscribe",
            "Field 'request_id' must be an integer from 0 to 9223372036854775807, got 1.5",
        ),
        (
            json!({"command":"subscribe","id":7,"params":["a"]}),
            "subscribe",
            "Field 'id' must be a string, got a number",
        ),
        (
            json!({"command":"send","id":"c","text":"x","timeout_ms":-1}),
            "send",
            "Field 'timeout_ms' must be an integer from 0 to 2147483647, got -1",
        ),
        (
            json!({"command":"send","id":"c","text":"x","timeout_ms":2_147_483_648_i64}),
            "send",
            "Field 'timeout_ms' must be an integer from 0 to 2147483647, got 2147483648",
        ),
        (
            json!({"command":"send","id":"c","text":"x","timeout_ms":"100"}),
            "send",
            "Field 'timeout_ms' must be an integer from 0 to 2147483647, got \"100\"",
        ),
        (
            json!({"command":"send_raw","id":"c","text":5}),
            "send_raw",
            "Field 'text' must be a string, got a number",
        ),
        (
            json!({"command":"send_raw","id":"c","message":[1,2]}),
            "send_raw",
            "Field 'message' must be a string, got an array",
        ),
        (
            json!({"command":"send_raw","id":"c","text":"x","content_type":5}),
            "send_raw",
            "Field 'content_type' must be a string, got a number",
        ),
        (
            json!({"command":"list","filters":{"venue":1}}),
            "list",
            "Field 'filters.venue' must be a string, got a number",
        ),
        (
            json!({"command":"list","filters":[{"key":"a","value":"b"}]}),
            "list",
            "Field 'filters' must be an object of strings, got an array",
        ),
        (
            json!({"command":"publish","id":"c","topic":["t"]}),
            "publish",
            "Field 'topic' must be a string, got an array",
        ),
        (
            json!({"command":"set_tag","id":"c","key":"k","value":3}),
            "set_tag",
            "Field 'value' must be a string, got a number",
        ),
        (
            json!({"command":"set_tags","id":"c","tags":"a=b"}),
            "set_tags",
            "Field 'tags' must be an object of strings, got a string",
        ),
        (
            json!({"command":"set_tags","id":"c","tags":{"a":null}}),
            "set_tags",
            "Field 'tags.a' must be a string, got null",
        ),
        (
            json!({"command":"rotate","id":["c"]}),
            "rotate",
            "Field 'id' must be a string, got an array",
        ),
        (
            json!({"command":"create","url":"wss://x","redundancy":"two"}),
            "create",
            "Field 'redundancy' must be an integer from 1 to 2, got \"two\"",
        ),
        (
            json!({"command":"create","url":"wss://x","redundancy":3}),
            "create",
            "Field 'redundancy' must be an integer from 1 to 2, got 3",
        ),
        (
            json!({"command":"create","url":"wss://x","redundancy":1.5}),
            "create",
            "Field 'redundancy' must be an integer from 1 to 2, got 1.5",
        ),
        (
            json!({"command":"create","url":"wss://x","max_lifetime_ms":"1h"}),
            "create",
            "Field 'max_lifetime_ms' must be an integer from 0 to 9223372036854775807, got \"1h\"",
        ),
        (
            json!({"command":"create","url":"wss://x","max_lifetime_ms":-1}),
            "create",
            "Field 'max_lifetime_ms' must be an integer from 0 to 9223372036854775807, got -1",
        ),
    ];
    for (data, command, message) in cases {
        assert_refused(data, command, "BAD_REQUEST", message);
    }
}

#[test]
fn invalid_base64_message_gets_a_bad_request_reply() {
    for command in ["send_raw", "send"] {
        for message in ["not base64!", "a", "a===", "€", "aGk=aGk=", "aGk*"] {
            assert_refused(
                json!({"command": command, "id": "c", "message": message}),
                command,
                "BAD_REQUEST",
                "Field 'message' must be base64",
            );
        }
    }
}

#[test]
fn both_message_and_text_get_a_bad_request_reply() {
    for command in ["send_raw", "send"] {
        assert_refused(
            json!({"command": command, "id": "c", "message": "aGk=", "text": "hi"}),
            command,
            "BAD_REQUEST",
            "Fields 'message' and 'text' are mutually exclusive; send one",
        );
    }
}
