//! The broker's per-connection state machine (handshake, name, `sub`,
//! routing, queues under their bounds, deadlines, hang-ups) fed arbitrary
//! sequences of datagrams and events through the sans-IO driver, with every
//! count the broker keeps checked after each step.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = fims_server::sim::Sim::run(data) {
        panic!("broker invariant broken: {e}");
    }
});
