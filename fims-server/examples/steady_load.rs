//! A fixed, repeatable load on a running broker, for counting what the broker
//! spends per message with tools that watch its process from outside
//! (`valgrind --tool=callgrind` for its instructions, `perf stat -e
//! raw_syscalls:sys_enter,context-switches` for its system calls and context
//! switches). Not the project's benchmark (`perf-report` in `benches/` is);
//! docs/PERFORMANCE.md says how the two are used.
//!
//! One publisher sends `--bursts` bursts of `--burst` 150-byte
//! `pub /bench/tp/data` datagrams; two subscribers (threads of this process,
//! each its own connection) subscribe to `/bench/tp` and count. With
//! `--tick-us 0` each burst waits until both subscribers have everything sent
//! so far (lockstep: the broker sees the same batches in every run, whatever
//! its speed); otherwise bursts start every `--tick-us` microseconds
//! (absolute deadlines), as `perf-report`'s steady load does.
//!
//! ```sh
//! fims_server --socket /tmp/x/fims.sock &
//! cargo run --release -p fims-server --example steady_load -- --socket /tmp/x/fims.sock
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use fims::blocking::Client;
use fims::Message;

/// Wire size of one published datagram (as `perf-report`'s steady load).
const PUB_BYTES: usize = 150;

#[derive(Parser, Debug)]
#[command(about = "A fixed steady load on a running fims_server (one publisher, two subscribers)")]
struct Args {
    /// Socket of the broker.
    #[arg(long)]
    socket: std::path::PathBuf,
    /// Number of bursts.
    #[arg(long, default_value_t = 1000)]
    bursts: u64,
    /// Datagrams per burst.
    #[arg(long, default_value_t = 20)]
    burst: u64,
    /// Burst interval in microseconds; 0 waits for both subscribers after each burst.
    #[arg(long, default_value_t = 0)]
    tick_us: u64,
}

fn datagram() -> Vec<u8> {
    let mut m = Message {
        method: "pub",
        uri: "/bench/tp/data",
        process_name: "steady_load",
        ..Message::default()
    };
    let head = m.encoded_len();
    let body = vec![b'0'; PUB_BYTES - head];
    m.body = &body;
    let mut out = Vec::new();
    // Cannot fail: short strings, small body.
    m.encode(&mut out).expect("encodable");
    out
}

fn subscriber(socket: &std::path::Path, n: usize, count: Arc<AtomicU64>) -> fims::Result<()> {
    let mut c = Client::connect_to(socket, &format!("steady_load_sub{n}"))?;
    c.subscribe(&["/bench/tp"])?;
    count.store(0, Ordering::SeqCst);
    std::thread::spawn(move || loop {
        match c.recv(None) {
            Ok(Some(_)) => {
                count.fetch_add(1, Ordering::Release);
            }
            Ok(None) => {}
            Err(_) => return,
        }
    });
    Ok(())
}

fn wait_for(counts: &[Arc<AtomicU64>], want: u64, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while counts.iter().any(|c| c.load(Ordering::Acquire) < want) {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    true
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let counts: Vec<Arc<AtomicU64>> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
    for (n, c) in counts.iter().enumerate() {
        subscriber(&args.socket, n + 1, Arc::clone(c))?;
    }
    let mut publisher = Client::connect_to(&args.socket, "steady_load_pub")?;
    let dg = datagram();
    let t0 = Instant::now();
    let tick = Duration::from_micros(args.tick_us);
    let mut sent = 0;
    for b in 0..args.bursts {
        if !tick.is_zero() {
            let at = t0 + tick * b as u32;
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        for _ in 0..args.burst {
            publisher.send_raw(&dg)?;
        }
        sent += args.burst;
        if tick.is_zero() && !wait_for(&counts, sent, Duration::from_secs(30)) {
            return Err(format!("subscribers stuck below {sent}").into());
        }
    }
    let all = wait_for(&counts, sent, Duration::from_secs(30));
    let got: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Acquire)).collect();
    println!(
        "sent {sent} in {:.3} s, subscribers got {got:?}{}",
        t0.elapsed().as_secs_f64(),
        if all { "" } else { " (LOST some)" }
    );
    Ok(())
}
