//! The realistic datagrams every measurement uses, encoded once.

use fims::Message;

/// Base URI of the simulated monitored process.
pub const BASE_URI: &str = "/bench";
/// Its heartbeat endpoint (`<uri>/cops`).
pub const COPS_URI: &str = "/bench/cops";
/// Where COPS wants the answer.
pub const REPLY_URI: &str = "/cops/heartbeat/bench";
/// Base URI of the fixed-answer echo peer (so it never sees the responder's traffic).
pub const ECHO_BASE_URI: &str = "/bench_echo";
/// Where COPS wants the echo peer's answer.
pub const ECHO_REPLY_URI: &str = "/cops/heartbeat/bench_echo";
/// The throughput stream's subscription; data goes to `.../data`.
pub const TP_URI: &str = "/bench/tp";
/// Data messages of the throughput stream.
pub const TP_DATA_URI: &str = "/bench/tp/data";
/// End-of-burst marker of the throughput stream (its replyto gets the count).
pub const TP_END_URI: &str = "/bench/tp/end";
/// Where the sink answers the end marker.
pub const TP_ACK_URI: &str = "/bench/tp_ack";
/// A typical answer of a responder to `get <uri>/cops`.
pub const ANSWER_BODY: &[u8] = br#"{"cops_heartbeat":17,"pid":4242,"version_tag":"1.4.0","version_commit":"a1b2c3d","version_build":"372"}"#;
/// A typical published status body (about 100 bytes).
pub const PUB_BODY: &[u8] = br#"{"soc":{"value":55.25},"status":"Running","active_power":{"value":-1250.5},"alarms":0,"faults":0}"#;

fn encode(msg: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.encoded_len());
    // Cannot fail: every string above is far below 255 bytes.
    msg.encode(&mut out).expect("static message encodes");
    out
}

/// COPS's heartbeat request: `get /bench/cops`, replyto `/cops/heartbeat/bench`.
pub fn heartbeat_get() -> Vec<u8> {
    heartbeat_get_to(COPS_URI, REPLY_URI)
}

/// COPS's heartbeat request to `cops_uri` with replyto `reply_uri`.
pub fn heartbeat_get_to(cops_uri: &str, reply_uri: &str) -> Vec<u8> {
    encode(&Message {
        method: "get",
        uri: cops_uri,
        replyto: reply_uri,
        process_name: "cops",
        username: "root",
        body: b"",
    })
}

/// The responder's answer: `set /cops/heartbeat/bench` with the heartbeat object.
pub fn heartbeat_answer() -> Vec<u8> {
    encode(&Message {
        method: "set",
        uri: REPLY_URI,
        replyto: "",
        process_name: "bench_responder",
        username: "root",
        body: ANSWER_BODY,
    })
}

/// COPS's naked heartbeat SET: `set /bench/cops/cops_heartbeat` body `17`.
pub fn heartbeat_set() -> Vec<u8> {
    encode(&Message {
        method: "set",
        uri: "/bench/cops/cops_heartbeat",
        replyto: "",
        process_name: "cops",
        username: "root",
        body: b"17",
    })
}

/// One published status message of about 170 bytes.
pub fn status_pub() -> Vec<u8> {
    encode(&Message {
        method: "pub",
        uri: TP_DATA_URI,
        replyto: "",
        process_name: "bench_publisher",
        username: "root",
        body: PUB_BODY,
    })
}

/// Size of one message of the steady load (`broker_cpu_pct_20k`).
pub const LOAD_PUB_BYTES: usize = 150;

/// The steady load's message: a status `pub` to [`TP_DATA_URI`] of exactly
/// [`LOAD_PUB_BYTES`] bytes on the wire (state of charge, status, power and a
/// zero-padded sequence field that fills it to size).
pub fn load_pub() -> Vec<u8> {
    const OPEN: &[u8] =
        br#"{"soc":{"value":55.25},"status":"Running","active_power":{"value":-1250.5},"seq":""#;
    const CLOSE: &[u8] = br#""}"#;
    let head = status_pub().len() - PUB_BODY.len();
    let digits = LOAD_PUB_BYTES.saturating_sub(head + OPEN.len() + CLOSE.len());
    let mut body = OPEN.to_vec();
    body.extend(std::iter::repeat_n(b'0', digits));
    body.extend_from_slice(CLOSE);
    encode(&Message {
        method: "pub",
        uri: TP_DATA_URI,
        replyto: "",
        process_name: "bench_publisher",
        username: "root",
        body: &body,
    })
}

/// A larger published message (1 KiB JSON body).
pub fn big_pub() -> Vec<u8> {
    let mut body = String::from("{\"points\":[");
    let mut i = 0;
    while body.len() < 1000 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!("{{\"id\":{i},\"value\":{}.5}}", i * 7));
        i += 1;
    }
    body.push_str("]}");
    encode(&Message {
        method: "pub",
        uri: "/components/bms_9/points",
        replyto: "",
        process_name: "modbus_interface",
        username: "root",
        body: body.as_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_message_is_150_bytes_of_json_pub() {
        let m = load_pub();
        assert_eq!(m.len(), LOAD_PUB_BYTES);
        let d = Message::decode(&m).unwrap();
        assert_eq!((d.method, d.uri), ("pub", TP_DATA_URI));
        let v: serde_json::Value = serde_json::from_slice(d.body).unwrap();
        assert_eq!(v["status"], "Running");
    }
}
