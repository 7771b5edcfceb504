//! The cross-language check: one `cops` supervises the C++ `controller` example
//! of c-bindings (responder through the C ABI, static library) and a Rust
//! `demo_process`; each is hung in turn, killed by COPS and restarted by the
//! supervisor loop, and COPS sees both alive again with their new PIDs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use cops_examples::children::{Guarded, Supervisor, SupervisorEvent};
use cops_examples::world::World;
use fims::{blocking::Client, Method, Subscription};
use testkit::Broker;

/// Compiles `c-bindings/examples/controller.cpp` against the checked-in header
/// and `libcops_responder.a` (built by cargo), into `out`.
fn compile_controller(out: &Path) -> PathBuf {
    let lib = testkit::lib("cops-responder", "libcops_responder.a");
    let cb = Path::new(env!("CARGO_MANIFEST_DIR")).join("../c-bindings");
    let exe = out.join("controller");
    let output = Command::new("g++")
        .args(["-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(cb.join("include"))
        .arg("-I")
        .arg(cb.join("examples"))
        .arg("-o")
        .arg(&exe)
        .arg(cb.join("examples/controller.cpp"))
        .arg(lib)
        .args(["-lpthread", "-ldl", "-lm"])
        .output()
        .expect("g++ runs");
    assert!(
        output.status.success(),
        "g++ controller.cpp failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    exe
}

const CONFIG: &str = r#"{
    "ourUri": "/cops",
    "heartbeatFreq": 100,
    "replyToGetDeadline": 80,
    "heartbeatErrorAllowance": 3,
    "briefingFrequencyMS": 100,
    "processList": [
        {"name": "cpp_controller", "uri": "/site", "killOnHang": true,
         "expectedExe": "controller"},
        {"name": "rust_modbus", "uri": "/components/modbus_test_client", "killOnHang": true,
         "expectedExe": "demo_process"}
    ]
}"#;

struct Run {
    world: World,
    client: Client,
    rx: Receiver<(Instant, SupervisorEvent)>,
}

impl Run {
    fn until<T>(&mut self, what: &str, mut cond: impl FnMut(&World) -> Option<T>) -> T {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            while let Ok((at, ev)) = self.rx.try_recv() {
                self.world.on_supervisor(at, ev);
            }
            if let Some(v) = cond(&self.world) {
                return v;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}");
            if let Ok(Some(m)) = self.client.recv(Some(Duration::from_millis(10))) {
                let m = m.to_owned();
                self.world.on_message(Instant::now(), &m.uri, &m.body);
            }
        }
    }

    fn alive(&mut self, name: &str) -> u32 {
        self.until(&format!("{name} alive in COPS's stats"), |w| {
            let pid = *w.running.get(name)?;
            w.alive_as(name, pid).then_some(pid)
        })
    }

    /// Hangs `name`, waits for COPS's kill and for the new incarnation to be alive.
    fn hang_and_recover(&mut self, name: &str, uri: &str) {
        let old = self.alive(name);
        let t0 = Instant::now();
        let hang = format!("{uri}/debug/hang");
        self.client
            .send(Method::Set, &hang, None, b"true")
            .expect("send hang");
        let exit = self.until(&format!("the kill of {name} pid {old}"), |w| {
            w.exit_of(name, old).cloned()
        });
        assert_eq!(exit.status.code(), None, "{name} was not killed: {exit:?}");
        let new = self.alive(name);
        assert_ne!(new, old);
        self.until(&format!("COPS's alarm about {name}"), |w| {
            w.events_since(t0, 3).next().cloned()
        });
        let (_, stats) = self.world.stats.get(name).expect("stats");
        assert!(
            stats.total_restarts.unwrap_or(0) >= 1,
            "restart not counted: {stats:?}"
        );
    }
}

#[test]
fn one_cops_kills_and_sees_restarted_a_cpp_and_a_rust_process() {
    let build_dir = tempfile::tempdir().expect("temp dir");
    let controller = compile_controller(build_dir.path());
    let broker = Broker::start();
    let config = broker.dir().join("cops.json");
    std::fs::write(&config, CONFIG).expect("write config");
    let _cops = Guarded::spawn(
        Command::new(testkit::bin("cops-server", "cops"))
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(broker.socket())
            .stdin(Stdio::null()),
    )
    .expect("start cops");

    let mut client = Client::connect_to(broker.socket(), "cross_test").expect("connect");
    client
        .subscribe_with(&[
            Subscription::all("/events"),
            Subscription::pub_only("/cops"),
        ])
        .expect("subscribe");
    let (tx, rx) = channel();
    let sock = broker.socket().to_path_buf();
    let s2 = sock.clone();
    let _cpp = Supervisor::start(
        "cpp_controller",
        move || {
            let mut c = Command::new(&controller);
            c.args(["--name", "cpp_controller", "--uri", "/site", "--socket"])
                .arg(&sock)
                .stdout(Stdio::null());
            c
        },
        Duration::from_millis(50),
        tx.clone(),
    )
    .expect("supervise controller");
    let _rust = Supervisor::start(
        "rust_modbus",
        move || {
            let mut c = Command::new(env!("CARGO_BIN_EXE_demo_process"));
            c.args([
                "--name",
                "rust_modbus",
                "--uri",
                "/components/modbus_test_client",
            ])
            .arg("--socket")
            .arg(&s2)
            .env("RUST_LOG", "warn");
            c
        },
        Duration::from_millis(50),
        tx,
    )
    .expect("supervise demo_process");

    let mut run = Run {
        world: World::new(Instant::now(), "/cops"),
        client,
        rx,
    };
    run.alive("cpp_controller");
    run.alive("rust_modbus");
    run.hang_and_recover("cpp_controller", "/site");
    run.hang_and_recover("rust_modbus", "/components/modbus_test_client");
    // Both alive at the end, under the same COPS.
    run.alive("cpp_controller");
    run.alive("rust_modbus");
}
