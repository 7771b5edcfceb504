//! `cops status [NAME...] [--json] [--watch[=SECS]]`: one screen of what COPS
//! sees, from `get <ourUri>/status` (in pages of 500 processes).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use fims::blocking::Client;
use fims::Method;
use serde_json::{json, Value};

use super::{age, ms, use_color, Failure, Paint, Target};

/// `cops status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// Only these processes (the exit status is about them alone).
    names: Vec<String>,
    /// Print what COPS answered as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Redraw every SECS seconds (default 2) until interrupted.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    watch: Option<f64>,
}

pub(super) fn run(a: &StatusArgs) -> ExitCode {
    match a.watch {
        Some(secs) => watch(a, secs),
        None => match once(a, &mut None) {
            Ok((text, code)) => {
                print!("{text}");
                ExitCode::from(code)
            }
            Err(f) => f.exit(),
        },
    }
}

/// One status: the text to print and the exit status.
fn once(a: &StatusArgs, conn: &mut Option<Client>) -> Result<(String, u8), Failure> {
    let mut client = match conn.take() {
        Some(c) => c,
        None => a.target.connect("cops_status")?,
    };
    let all = fetch(&a.target, &mut client)?;
    *conn = Some(client);
    let shown = select(all, &a.names)?;
    let code = if healthy(&shown, !a.names.is_empty()) {
        0
    } else {
        3
    };
    let text = if a.json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&shown).unwrap_or_default()
        )
    } else {
        render_status(&shown, Paint(use_color()))
    };
    Ok((text, code))
}

fn watch(a: &StatusArgs, secs: f64) -> ExitCode {
    let every = Duration::from_secs_f64(secs.clamp(0.1, 3600.0));
    // On a terminal, redraw in place (NO_COLOR is about colours, not this).
    let clear = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut conn = None;
    loop {
        let text = match once(a, &mut conn) {
            Ok((text, _)) => text,
            Err(f) => format!("{}\n", f.message),
        };
        let mut out = std::io::stdout().lock();
        if clear {
            let _ = write!(out, "\x1b[H\x1b[2J");
        }
        let _ = write!(out, "{text}(every {secs} s; Ctrl-C to stop)\n\n");
        let _ = out.flush();
        drop(out);
        std::thread::sleep(every);
    }
}

/// Every page of `get <ourUri>/status`, as one `{"summary","processes"}`.
fn fetch(t: &Target, c: &mut Client) -> Result<Value, Failure> {
    let mut first = t.ask(c, Method::Get, "/status", b"")?;
    let mut rows = take_rows(&mut first);
    let mut next = first["next"].as_u64();
    // Bounded by the process count COPS reported (a changing answer cannot loop).
    let total = first["total"].as_u64().unwrap_or(0);
    while let Some(off) = next.filter(|&o| o > 0 && o < total) {
        let mut page = t.ask(c, Method::Get, &format!("/status/{off}"), b"")?;
        let more = take_rows(&mut page);
        if more.is_empty() {
            break;
        }
        rows.extend(more);
        next = page["next"].as_u64().filter(|&n| n > off);
    }
    Ok(json!({"summary": first["summary"].take(), "processes": rows}))
}

fn take_rows(page: &mut Value) -> Vec<Value> {
    match page["processes"].take() {
        Value::Array(rows) => rows,
        _ => Vec::new(),
    }
}

/// Keeps the processes named (all when none); code 4 for a name COPS does not know.
fn select(mut all: Value, names: &[String]) -> Result<Value, Failure> {
    if names.is_empty() {
        return Ok(all);
    }
    let rows = take_rows(&mut all);
    let mut kept = Vec::with_capacity(names.len());
    for n in names {
        match rows.iter().find(|r| r["name"] == n.as_str()) {
            Some(r) => kept.push(r.clone()),
            None => {
                return Err(Failure {
                    code: 4,
                    message: format!("cops: COPS monitors no process named {n}"),
                })
            }
        }
    }
    all["processes"] = Value::Array(kept);
    Ok(all)
}

/// Healthy as COPS says for the whole site; for named processes, every one
/// that is monitored is alive.
fn healthy(v: &Value, named: bool) -> bool {
    if !named {
        return v["summary"]["status"] == "healthy";
    }
    v["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["monitored"] != false)
        .all(|r| r["state"] == "alive")
}

/// The header line: controller, health, uptime, bus, kill budget, inhibits,
/// loop alarms.
fn header(s: &Value, p: Paint) -> String {
    let health = if s["status"] == "healthy" {
        p.paint("32", "healthy")
    } else {
        let mut bad = Vec::new();
        for k in ["hung", "unknown"] {
            if let Some(n) = s[k].as_u64().filter(|&n| n > 0) {
                bad.push(format!("{n} {k}"));
            }
        }
        p.paint("1;31", &format!("UNHEALTHY ({})", bad.join(", ")))
    };
    let up = age(&Value::from(s["uptime_s"].as_f64().unwrap_or(0.0) * 1000.0)).unwrap_or_default();
    let bus = if s["connected"] == false {
        p.paint("1;31", "bus DOWN")
    } else if s["stalled"] == true {
        let since = s["stalled_since"].as_str().unwrap_or("?");
        p.paint("1;33", &format!("bus STALLED since {since}"))
    } else {
        format!("bus ok ({} stalls)", s["stalls"].as_u64().unwrap_or(0))
    };
    let budget = match &s["kill_budget"] {
        Value::Object(b) => format!(
            "kill budget {} of {} left per {}",
            b.get("left").and_then(Value::as_u64).unwrap_or(0),
            b.get("max").and_then(Value::as_u64).unwrap_or(0),
            age(b.get("window_ms").unwrap_or(&Value::Null)).unwrap_or_default()
        ),
        _ => "no site kill budget".into(),
    };
    let inhibited = match s["inhibited"].as_u64() {
        Some(n) if n > 0 => format!(", {n} inhibited"),
        _ => String::new(),
    };
    let loops = match s["loop_alarms"].as_u64() {
        Some(n) if n > 0 => p.paint(
            "1;33",
            &format!(", {n} loop alarm{}", if n == 1 { "" } else { "s" }),
        ),
        _ => String::new(),
    };
    format!(
        "COPS on {}: {health}, up {up}, {bus}, {budget}{inhibited}{loops}\n",
        s["controller_name"].as_str().unwrap_or("?")
    )
}

/// The LOOP cell: the p99 of the work loop's iterations over the last minute
/// (hosts that tick; `-` for the others), after the verdict where loop keys
/// are set: `ok`, what fails with the failing beats in a row against
/// `loopToleranceBeats` (`overrun 2/3`, `slow 1/3`, `fast 1/3`), or `alarm`.
fn loop_cell(r: &Value) -> String {
    let Some(us) = r["loop_p99_us"].as_f64() else {
        return "-".to_owned();
    };
    let p99 = ms(us / 1000.0);
    let Some(tolerance) = r["loop_tolerance"].as_u64() else {
        return p99;
    };
    let failing = r["loop_failing"].as_u64().unwrap_or(0);
    if r["loop_alarm"] == true {
        format!("alarm {p99}")
    } else if failing > 0 {
        let fault = r["loop_fault"].as_str().unwrap_or("failing");
        format!("{fault} {failing}/{tolerance} {p99}")
    } else {
        format!("ok {p99}")
    }
}

/// The cells of one row (plain text) and the colour of its state.
fn cells(r: &Value) -> ([String; 9], &'static str) {
    let inhibited = r["inhibited"] == true;
    let state = r["state"].as_str().unwrap_or("?");
    let (shown, color) = match state {
        _ if inhibited => ("inhibited", "35"),
        "alive" => ("alive", "32"),
        "hung" => ("hung", "1;31"),
        "unknown" => ("unknown", "33"),
        "not_monitored" => ("not-monitored", "2"),
        other => (other, "0"),
    };
    let dash = || "-".to_owned();
    let pid = r["pid"]
        .as_u64()
        .map(|p| p.to_string())
        .unwrap_or_else(dash);
    let beat = age(&r["last_beat_age_ms"])
        .map(|a| format!("{a} ago"))
        .unwrap_or_else(|| "never".into());
    let rtt = match (r["rtt_p50_ms"].as_f64(), r["rtt_p99_ms"].as_f64()) {
        (Some(a), Some(b)) => format!("{}/{}", ms(a), ms(b)),
        _ => dash(),
    };
    let allow = match r["hang_time_allowance_ms"].as_f64() {
        Some(t) => age(&Value::from(t)).unwrap_or_default(),
        None => r["miss_allowance"].to_string(),
    };
    let misses = if state == "not_monitored" {
        dash()
    } else {
        format!("{}/{allow}", r["missed_heartbeats"])
    };
    let mut restarts = format!("{}/{}", r["total_restarts"], r["cops_restarts"]);
    if let Some(a) = age(&r["last_restart_age_ms"]) {
        restarts.push_str(&format!(" ({a} ago)"));
    }
    let kill = match &r["last_kill"] {
        Value::Object(k) => format!(
            "{} {} {} ago",
            k.get("signal").and_then(Value::as_str).unwrap_or("?"),
            k.get("reason").and_then(Value::as_str).unwrap_or("?"),
            age(k.get("age_ms").unwrap_or(&Value::Null)).unwrap_or_default()
        ),
        _ => dash(),
    };
    let name = r["name"].as_str().unwrap_or("?").to_owned();
    (
        [
            name,
            shown.into(),
            pid,
            beat,
            rtt,
            loop_cell(r),
            misses,
            restarts,
            kill,
        ],
        color,
    )
}

/// What a raised loop alarm's line under the table says: the failing run
/// now, the last beat, the p99, the overruns so far.
fn loop_alarm_detail(r: &Value) -> String {
    let us = |k: &str| {
        r[k].as_f64()
            .map_or_else(|| "?".to_owned(), |us| ms(us / 1000.0))
    };
    let run = match (r["loop_failing"].as_u64(), r["loop_fault"].as_str()) {
        (Some(n), Some(fault)) if n > 0 => format!("{n} failing beats in a row ({fault})"),
        _ => "good beats again, not yet enough to end it".to_owned(),
    };
    let last = match r["loop_count"].as_u64() {
        Some(0) => "no iteration ended in the last beat".to_owned(),
        Some(n) => format!(
            "last beat {n} iteration{}, longest {}",
            if n == 1 { "" } else { "s" },
            us("loop_max_us")
        ),
        None => "no loop figures".to_owned(),
    };
    format!(
        "{run}; {last}; p99 {}; {} overrun beats so far",
        us("loop_p99_us"),
        r["loop_overruns"].as_u64().unwrap_or(0)
    )
}

/// Column of the LOOP cell, shown only when some process reports loop figures.
const LOOP_COL: usize = 5;

/// The whole screen: header, table, and a line per inhibited process and per
/// raised loop alarm. The LOOP column (the work loop's p99) is there only
/// when some process reports loop figures (hosts that tick).
pub fn render_status(v: &Value, p: Paint) -> String {
    const HEAD: [&str; 9] = [
        "NAME",
        "STATE",
        "PID",
        "LAST BEAT",
        "RTT p50/p99",
        "LOOP p99",
        "MISSES",
        "RESTARTS all/cops",
        "LAST KILL",
    ];
    let list = v["processes"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let with_loop = list.iter().any(|r| r["loop_p99_us"].is_number());
    let keep = |k: usize| with_loop || k != LOOP_COL;
    let rows: Vec<_> = list.iter().map(cells).collect();
    let mut width = HEAD.map(str::len);
    for (c, _) in &rows {
        for (w, cell) in width.iter_mut().zip(c) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = header(&v["summary"], p);
    let line = |cells: [&str; 9], color: Option<&str>| {
        let cells: Vec<(usize, &str, usize)> = (0..cells.len())
            .filter(|&k| keep(k))
            .map(|k| (k, cells[k], width[k]))
            .collect();
        let mut l = String::new();
        for (n, &(k, cell, w)) in cells.iter().enumerate() {
            let pad = " ".repeat(w.saturating_sub(cell.chars().count()));
            let text = match color {
                Some(c) if k == 1 => p.paint(c, cell),
                _ => (*cell).to_owned(),
            };
            l.push_str(&text);
            if n + 1 < cells.len() {
                l.push_str(&pad);
                l.push_str("  ");
            }
        }
        l.push('\n');
        l
    };
    out.push_str(&p.paint("1", line(HEAD, None).trim_end()));
    out.push('\n');
    for (c, color) in &rows {
        out.push_str(&line(c.each_ref().map(String::as_str), Some(color)));
    }
    for r in v["processes"].as_array().into_iter().flatten() {
        if r["inhibited"] != true {
            continue;
        }
        let reason = r["inhibit_reason"].as_str().filter(|s| !s.is_empty());
        out.push_str(&format!(
            "{} inhibited by {} for {} more (state {}){}\n",
            r["name"].as_str().unwrap_or("?"),
            r["inhibited_by"].as_str().unwrap_or("?"),
            age(&r["inhibit_left_ms"]).unwrap_or_default(),
            r["state"].as_str().unwrap_or("?"),
            reason.map(|s| format!(": {s}")).unwrap_or_default()
        ));
    }
    for r in list.iter().filter(|r| r["loop_alarm"] == true) {
        let name = r["name"].as_str().unwrap_or("?");
        out.push_str(&format!(
            "{name} {}: {} (cops why {name})\n",
            p.paint("1;33", "loop alarm"),
            loop_alarm_detail(r)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        json!({
            "summary": {"controller_name":"site7","status":"unhealthy","hung":1,"unknown":0,
                "uptime_s":7384,"connected":true,"stalled":false,"stalls":0,
                "kill_budget":{"max":2,"left":1,"used":1,"window_ms":3000},"inhibited":1},
            "processes": [
                {"name":"hybridos_controller","state":"alive","pid":4242,"monitored":true,
                 "last_beat_age_ms":412.5,"rtt_p50_ms":0.31,"rtt_p99_ms":1.24,"missed_heartbeats":0,
                 "miss_allowance":5,"hang_time_allowance_ms":null,"total_restarts":3,"cops_restarts":2,
                 "last_restart_age_ms":240000,"last_kill":{"signal":"SIGKILL","reason":"hung","age_ms":241000},
                 "inhibited":false,"loop_max_us":21000,"loop_p99_us":20500,"loop_tolerance":3,
                 "loop_overruns":0,"loop_failing":0,"loop_alarm":false,"loop_fault":null},
                {"name":"modbus_client","state":"hung","pid":4310,"monitored":true,
                 "last_beat_age_ms":12000,"rtt_p50_ms":null,"rtt_p99_ms":null,"missed_heartbeats":5,
                 "miss_allowance":5,"hang_time_allowance_ms":null,"total_restarts":0,"cops_restarts":0,
                 "last_restart_age_ms":null,"last_kill":null,"inhibited":true,"inhibited_by":"root",
                 "inhibit_left_ms":540000,"inhibit_reason":"firmware upgrade"},
                {"name":"scheduler","state":"not_monitored","pid":null,"monitored":false,
                 "last_beat_age_ms":null,"missed_heartbeats":0,"miss_allowance":5,
                 "hang_time_allowance_ms":null,"total_restarts":0,"cops_restarts":0,"inhibited":false}
            ]
        })
    }

    #[test]
    fn renders_one_screen() {
        let text = render_status(&sample(), Paint(false));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "COPS on site7: UNHEALTHY (1 hung), up 2h3m, bus ok (0 stalls), kill budget 1 of 2 left per 3s, 1 inhibited"
        );
        assert!(
            lines[1].starts_with("NAME                 STATE          PID   LAST BEAT"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains("hybridos_controller  alive"),
            "{}",
            lines[2]
        );
        assert!(lines[2].contains("0.4s ago"), "{}", lines[2]);
        assert!(lines[2].contains("0.31ms/1.2ms"), "{}", lines[2]);
        assert!(lines[2].contains("3/2 (4m ago)"), "{}", lines[2]);
        assert!(lines[1].contains("RTT p50/p99   LOOP p99"), "{}", lines[1]);
        assert!(lines[2].contains("0.31ms/1.2ms  ok 20ms"), "{}", lines[2]);
        assert!(lines[2].ends_with("SIGKILL hung 4m1s ago"), "{}", lines[2]);
        assert!(lines[3].contains("inhibited"), "{}", lines[3]);
        assert!(
            lines[3].contains("12s ago") && lines[3].contains("5/5"),
            "{}",
            lines[3]
        );
        assert!(
            lines[4].contains("not-monitored") && lines[4].contains("never"),
            "{}",
            lines[4]
        );
        assert_eq!(
            lines[5],
            "modbus_client inhibited by root for 9m more (state hung): firmware upgrade"
        );
        assert!(!text.contains('\x1b'));
        let colored = render_status(&sample(), Paint(true));
        assert!(colored.contains("\x1b[1;31mUNHEALTHY"));
        assert!(colored.contains("\x1b[32malive\x1b[0m"));
    }

    /// The LOOP column: only when some process ticks; the verdict of
    /// processes with loop keys; one line per raised loop alarm.
    #[test]
    fn renders_the_work_loop() {
        let mut v = sample();
        let row = |v: &mut Value, k: usize, extra: Value| {
            for (key, val) in extra.as_object().expect("object") {
                v["processes"][k][key] = val.clone();
            }
        };
        let cell = |v: &Value| {
            let text = render_status(v, Paint(false));
            let head = text.lines().nth(1).expect("head").to_owned();
            let at = head.find("LOOP p99").expect("LOOP column");
            text.lines()
                .nth(2)
                .expect("row")
                .get(at..)
                .and_then(|s| s.split("  ").next())
                .expect("cell")
                .to_owned()
        };
        row(
            &mut v,
            0,
            json!({"loop_failing":2,"loop_fault":"overrun","loop_p99_us":84000}),
        );
        assert_eq!(cell(&v), "overrun 2/3 84ms");
        row(&mut v, 0, json!({"loop_failing":1,"loop_fault":"slow"}));
        assert_eq!(cell(&v), "slow 1/3 84ms");
        row(
            &mut v,
            0,
            json!({"loop_failing":3,"loop_alarm":true,"loop_max_us":340000,"loop_overruns":7,"loop_count":1}),
        );
        assert_eq!(cell(&v), "alarm 84ms");
        v["summary"]["loop_alarms"] = json!(1);
        let text = render_status(&v, Paint(false));
        assert!(text.starts_with("COPS on site7: UNHEALTHY (1 hung), up 2h3m, bus ok (0 stalls), kill budget 1 of 2 left per 3s, 1 inhibited, 1 loop alarm\n"), "{text}");
        assert!(
            text.ends_with("hybridos_controller loop alarm: 3 failing beats in a row (slow); last beat 1 iteration, longest 340ms; p99 84ms; 7 overrun beats so far (cops why hybridos_controller)\n"),
            "{text}"
        );
        row(
            &mut v,
            0,
            json!({"loop_failing":0,"loop_fault":null,"loop_count":0}),
        );
        let text = render_status(&v, Paint(false));
        assert!(
            text.ends_with("hybridos_controller loop alarm: good beats again, not yet enough to end it; no iteration ended in the last beat; p99 84ms; 7 overrun beats so far (cops why hybridos_controller)\n"),
            "{text}"
        );
        assert!(render_status(&v, Paint(true)).contains("\x1b[1;33mloop alarm"));
        // A host that ticks without loop keys: the p99 alone.
        row(&mut v, 0, json!({"loop_tolerance":null,"loop_alarm":false}));
        assert_eq!(cell(&v), "84ms");
        // Nobody ticks: no LOOP column.
        row(&mut v, 0, json!({"loop_p99_us":null}));
        let text = render_status(&v, Paint(false));
        assert!(!text.contains("LOOP"), "{text}");
        assert!(
            text.lines()
                .nth(2)
                .expect("row")
                .contains("0.31ms/1.2ms  0/5"),
            "{text}"
        );
    }

    #[test]
    fn health_of_the_site_or_the_named() {
        let v = sample();
        assert!(!healthy(&v, false));
        let one = select(v.clone(), &["hybridos_controller".into()]).unwrap();
        assert!(healthy(&one, true));
        let two = select(
            v.clone(),
            &["hybridos_controller".into(), "modbus_client".into()],
        )
        .unwrap();
        assert!(!healthy(&two, true));
        // Not monitored: never unhealthy by itself.
        let s = select(v.clone(), &["scheduler".into()]).unwrap();
        assert!(healthy(&s, true));
        let e = select(v, &["nope".into()]).unwrap_err();
        assert_eq!(e.code, 4);
    }
}
