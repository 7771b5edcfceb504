//! The byte encoding of a simulation: one config byte, then operations, each
//! a tag byte and its fields. Every byte string decodes to something (missing
//! fields end the run), so a fuzzer can feed anything; [`encode_ops`] writes
//! the seeds.

use std::time::Duration;

use super::Sim;
use crate::Config;

/// URIs operations pick from (by index), empty segments and bad ones included.
const URIS: [&str; 12] = [
    "/",
    "/a",
    "/a/b",
    "/a//b/",
    "//",
    "/b",
    "/a/b/c",
    "/cops",
    "/cops/junk",
    "",
    "a",
    "/é/x",
];
/// Methods operations pick from (by index), unknown ones included.
const METHODS: [&str; 9] = ["set", "get", "pub", "post", "del", "sub", "SET", "foo", ""];

/// One step of a simulation. Client numbers wrap around the clients so far;
/// every field is a small number the variant's line explains.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A new connection of uid `uid % 3`.
    Connect { uid: u8 },
    /// The client answers the handshake and sends a name.
    Handshake { client: u8 },
    /// The client sends these bytes as one datagram.
    Raw { client: u8, bytes: Vec<u8> },
    /// The client subscribes to these URIs (index into a table; high bit: pub-only).
    Sub { client: u8, uris: Vec<u8> },
    /// The client sends a message (indexes into the method and URI tables).
    Msg {
        client: u8,
        method: u8,
        uri: u8,
        replyto: u8,
        body: u16,
    },
    /// The client reads up to `max` datagrams.
    Read { client: u8, max: u8 },
    /// The client's socket takes `room % 8` more datagrams.
    Room { client: u8, room: u8 },
    /// The client closes its end and the broker sees it.
    Hangup { client: u8 },
    /// The client is gone; the broker notices on its next send.
    Vanish { client: u8 },
    /// Time passes.
    Advance { ms: u16 },
    /// The client sends a datagram larger than the broker's receive buffer.
    Oversize { client: u8 },
    /// From now on what clients send waits in the broker's batch (odd `on`),
    /// or the batch goes out and sending is immediate again (even `on`): the
    /// datagrams of one turn of the server's loop.
    Cork { on: u8 },
}

const BUDGETS: [usize; 4] = [1_500, 6_000, 50_000, 1 << 20];

/// The broker configuration the first byte of an input selects: small limits,
/// so a short input reaches every bound.
fn config(b: u8) -> Config {
    let mut cfg = Config::new("/nonexistent/sim.sock");
    cfg.max_len = 1024;
    cfg.max_conns_per_uid = if b & 1 != 0 { 3 } else { 0 };
    cfg.handshake_timeout = Duration::from_millis(if b & 2 != 0 { 1000 } else { 0 });
    cfg.max_queued_bytes = BUDGETS[usize::from(b >> 2) & 3];
    cfg.queue_datagrams = if b & 16 != 0 { 3 } else { 64 };
    cfg.queue_bytes = if b & 32 != 0 { 700 } else { 1 << 20 };
    cfg.max_subs_per_conn = 4;
    cfg
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }
    fn bytes(&mut self, n: usize) -> Option<Vec<u8>> {
        let n = n.min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(b.to_vec())
    }
}

fn decode_op(c: &mut Cursor<'_>) -> Option<Op> {
    Some(match c.u8()? % 12 {
        0 => Op::Connect { uid: c.u8()? },
        1 => Op::Handshake { client: c.u8()? },
        2 => {
            let client = c.u8()?;
            let len = c.u8()?;
            Op::Raw {
                client,
                bytes: c.bytes(usize::from(len))?,
            }
        }
        3 => {
            let client = c.u8()?;
            let n = c.u8()? % 8;
            Op::Sub {
                client,
                uris: c.bytes(usize::from(n))?,
            }
        }
        4 => Op::Msg {
            client: c.u8()?,
            method: c.u8()?,
            uri: c.u8()?,
            replyto: c.u8()?,
            body: c.u16()?,
        },
        5 => Op::Read {
            client: c.u8()?,
            max: c.u8()?,
        },
        6 => Op::Room {
            client: c.u8()?,
            room: c.u8()?,
        },
        7 => Op::Hangup { client: c.u8()? },
        8 => Op::Vanish { client: c.u8()? },
        9 => Op::Advance { ms: c.u16()? },
        10 => Op::Oversize { client: c.u8()? },
        _ => Op::Cork { on: c.u8()? },
    })
}

/// The config and operations `bytes` encode.
pub(super) fn decode(bytes: &[u8]) -> (Config, Vec<Op>) {
    let mut c = Cursor(bytes);
    let cfg = config(c.u8().unwrap_or(0));
    let ops = std::iter::from_fn(|| decode_op(&mut c)).collect();
    (cfg, ops)
}

/// Encodes a simulation: config byte `cfg`, then `ops`.
pub fn encode_ops(cfg: u8, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![cfg];
    for op in ops {
        match op {
            Op::Connect { uid } => out.extend([0, *uid]),
            Op::Handshake { client } => out.extend([1, *client]),
            Op::Raw { client, bytes } => {
                // One length byte: longer datagrams are cut at 255.
                let bytes = &bytes[..bytes.len().min(255)];
                out.extend([2, *client, bytes.len() as u8]);
                out.extend_from_slice(bytes);
            }
            Op::Sub { client, uris } => {
                let uris = &uris[..uris.len().min(7)];
                out.extend([3, *client, uris.len() as u8]);
                out.extend_from_slice(uris);
            }
            Op::Msg {
                client,
                method,
                uri,
                replyto,
                body,
            } => {
                out.extend([4, *client, *method, *uri, *replyto]);
                out.extend(body.to_le_bytes());
            }
            Op::Read { client, max } => out.extend([5, *client, *max]),
            Op::Room { client, room } => out.extend([6, *client, *room]),
            Op::Hangup { client } => out.extend([7, *client]),
            Op::Vanish { client } => out.extend([8, *client]),
            Op::Advance { ms } => {
                out.push(9);
                out.extend(ms.to_le_bytes());
            }
            Op::Oversize { client } => out.extend([10, *client]),
            Op::Cork { on } => out.extend([11, *on]),
        }
    }
    out
}

fn message(method: u8, uri: u8, replyto: u8, body: u16) -> Vec<u8> {
    let body = vec![b'7'; usize::from(body % 1100)];
    let m = fims::Message {
        method: METHODS[usize::from(method) % METHODS.len()],
        uri: URIS[usize::from(uri) % URIS.len()],
        replyto: if replyto & 1 == 0 {
            ""
        } else {
            URIS[usize::from(replyto >> 1) % URIS.len()]
        },
        username: if replyto & 0x80 != 0 { "forged" } else { "" },
        body: &body,
        ..fims::Message::default()
    };
    let mut out = Vec::new();
    // Cannot fail: the strings come from the tables and the body is small.
    let _ = m.encode(&mut out);
    out
}

fn sub(uris: &[u8]) -> Vec<u8> {
    let subs: Vec<fims::Subscription> = uris
        .iter()
        .map(|&i| fims::Subscription {
            uri: URIS[usize::from(i & 0x7f) % URIS.len()].into(),
            pub_only: i & 0x80 != 0,
        })
        .collect();
    let mut body = Vec::new();
    // An empty list makes an empty body: the broker must refuse it.
    let _ = fims::codec::encode_sub_body(&subs, &mut body);
    let m = fims::Message {
        method: "sub",
        body: &body,
        ..fims::Message::default()
    };
    let mut out = Vec::new();
    let _ = m.encode(&mut out);
    out
}

impl Sim {
    /// Performs one operation.
    pub(super) fn apply(&mut self, op: &Op) {
        let n = self.clients.len();
        let pick = |c: &u8| (n > 0).then(|| usize::from(*c) % n);
        match op {
            Op::Connect { uid } => {
                self.connect(u32::from(*uid % 3));
            }
            Op::Advance { ms } => self.advance(Duration::from_millis(u64::from(*ms))),
            Op::Handshake { client } => {
                if let Some(c) = pick(client) {
                    self.handshake(c, &format!("p{c}"));
                }
            }
            Op::Raw { client, bytes } => pick(client).into_iter().for_each(|c| self.send(c, bytes)),
            Op::Sub { client, uris } => pick(client)
                .into_iter()
                .for_each(|c| self.send(c, &sub(uris))),
            Op::Msg {
                client,
                method,
                uri,
                replyto,
                body,
            } => {
                if let Some(c) = pick(client) {
                    self.send(c, &message(*method, *uri, *replyto, *body));
                }
            }
            Op::Read { client, max } => {
                if let Some(c) = pick(client) {
                    self.read(c, usize::from(*max));
                }
            }
            Op::Room { client, room } => pick(client)
                .into_iter()
                .for_each(|c| self.set_room(c, usize::from(*room % 8))),
            Op::Hangup { client } => pick(client).into_iter().for_each(|c| self.hangup(c)),
            Op::Vanish { client } => pick(client).into_iter().for_each(|c| self.vanish(c)),
            Op::Oversize { client } => pick(client)
                .into_iter()
                .for_each(|c| self.send_oversize(c, 5000)),
            Op::Cork { on } => self.cork(on & 1 != 0),
        }
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// The wire examples of docs/protocol/fims.md (hex, whole datagrams).
pub const SPEC_VECTORS: [&str; 5] = [
    "0315000900000000040000007365742f636f6d706f6e656e74732f626d735f392f63617066696d735f73656e6431323334",
    "0000000b000000000700000066696d735f73657276657253554343455353",
    "030a1f0400000000000000006765742f736974652f636f70732f636f70732f6865617274626561742f736974655f636f6e74726f6c6c6572636f7073",
    "03000004000000000e000000737562636f707302000501042f636f70732f657373",
    "01000000801a0e00",
];

fn conn(uid: u8) -> Op {
    Op::Connect { uid }
}

fn hs(client: u8) -> Op {
    Op::Handshake { client }
}

fn sub_op(client: u8, uris: &[u8]) -> Op {
    Op::Sub {
        client,
        uris: uris.to_vec(),
    }
}

fn msg(client: u8, method: u8, uri: u8, body: u16) -> Op {
    Op::Msg {
        client,
        method,
        uri,
        replyto: 0,
        body,
    }
}

/// The doc's wire examples sent through a broker by two clients.
fn spec_seed() -> Vec<Op> {
    let v: Vec<Vec<u8>> = SPEC_VECTORS.iter().map(|s| hex(s)).collect();
    let raw = |client, bytes: &Vec<u8>| Op::Raw {
        client,
        bytes: bytes.clone(),
    };
    let mut ops = vec![conn(0), conn(1), hs(0), hs(1), raw(1, &v[3])];
    ops.extend([raw(0, &v[0]), raw(0, &v[2]), raw(0, &v[1]), raw(0, &v[4])]);
    ops.push(Op::Read { client: 1, max: 10 });
    ops
}

/// A flood to two receivers with full sockets, on a small budget.
fn flood_seed() -> Vec<Op> {
    let mut ops = vec![conn(0), conn(1), conn(2), hs(0), hs(1), hs(2)];
    ops.extend([sub_op(1, &[7]), sub_op(2, &[0])]);
    ops.extend([
        Op::Room { client: 1, room: 0 },
        Op::Room { client: 2, room: 0 },
    ]);
    ops.extend((0..12).map(|i| msg(0, 2, 8, 300 + i)));
    ops.push(Op::Read { client: 1, max: 5 });
    ops
}

/// Subscribing again, with fewer, then more URIs than the limit.
fn resubscribe_seed() -> Vec<Op> {
    let mut ops = vec![conn(0), conn(1), hs(0), hs(1), sub_op(1, &[1, 5, 0x83])];
    ops.extend([msg(0, 0, 2, 1), msg(0, 2, 5, 1), sub_op(1, &[5])]);
    ops.extend([
        msg(0, 0, 2, 1),
        msg(0, 0, 3, 1),
        sub_op(1, &[1, 2, 3, 4, 5, 6]),
    ]);
    ops.push(Op::Read { client: 1, max: 20 });
    ops
}

/// One loop turn's batch: messages to two receivers whose sockets fill up
/// part way, a `sub` answer, a receiver that vanishes and one that hangs up
/// while their datagrams wait, then the batch goes out.
fn batch_seed() -> Vec<Op> {
    let mut ops = vec![
        conn(0),
        conn(1),
        conn(2),
        conn(0),
        hs(0),
        hs(1),
        hs(2),
        hs(3),
    ];
    ops.extend([sub_op(1, &[1]), sub_op(2, &[0]), sub_op(3, &[2])]);
    ops.extend([Op::Room { client: 1, room: 3 }, Op::Cork { on: 1 }]);
    ops.extend((0..6).map(|i| msg(0, 2, 2, 40 + i)));
    ops.extend([
        sub_op(1, &[1, 5]),
        Op::Vanish { client: 2 },
        msg(0, 0, 6, 7),
        Op::Hangup { client: 3 },
        Op::Cork { on: 0 },
        Op::Read { client: 1, max: 2 },
        Op::Read { client: 2, max: 9 },
    ]);
    ops
}

/// Seed inputs for the broker fuzz target, built from the protocol doc's
/// examples and the situations the limits are for: `(name, bytes)`.
pub fn seed_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let deadline = [conn(0), conn(0), conn(0), conn(0), hs(1)];
    let deadline = [
        &deadline[..],
        &[Op::Advance { ms: 1500 }, Op::Oversize { client: 1 }],
    ]
    .concat();
    let vanish = [
        conn(0),
        conn(1),
        hs(0),
        hs(1),
        sub_op(1, &[0]),
        Op::Vanish { client: 1 },
    ];
    let vanish = [&vanish[..], &[msg(0, 0, 1, 5), Op::Hangup { client: 0 }]].concat();
    vec![
        ("spec_vectors", encode_ops(0, &spec_seed())),
        ("flood_small_budget", encode_ops(0b010000, &flood_seed())),
        ("resubscribe", encode_ops(0b001100, &resubscribe_seed())),
        ("deadline_uid_limit", encode_ops(0b000011, &deadline)),
        ("vanish", encode_ops(0b100100, &vanish)),
        ("batch", encode_ops(0b010000, &batch_seed())),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip_through_their_encoding() {
        for (name, bytes) in seed_inputs() {
            let (_, ops) = decode(&bytes);
            assert_eq!(encode_ops(bytes[0], &ops), bytes, "{name}");
        }
    }

    #[test]
    fn seeds_run_clean() {
        for (name, bytes) in seed_inputs() {
            let stats = Sim::run(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(stats.accepted > 0, "{name}");
        }
    }

    #[test]
    fn any_bytes_run_clean() {
        use proptest::prelude::*;
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..400))| {
            prop_assert_eq!(Sim::run(&bytes).err(), None);
        });
    }
}
