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

/// The header line: controller, health, uptime, bus, kill budget.
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
    format!(
        "COPS on {}: {health}, up {up}, {bus}, {budget}{inhibited}\n",
        s["controller_name"].as_str().unwrap_or("?")
    )
}

/// The cells of one row (plain text) and the colour of its state.
fn cells(r: &Value) -> ([String; 8], &'static str) {
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
        [name, shown.into(), pid, beat, rtt, misses, restarts, kill],
        color,
    )
}

/// The whole screen: header, table, and a line per inhibited process.
pub fn render_status(v: &Value, p: Paint) -> String {
    const HEAD: [&str; 8] = [
        "NAME",
        "STATE",
        "PID",
        "LAST BEAT",
        "RTT p50/p99",
        "MISSES",
        "RESTARTS all/cops",
        "LAST KILL",
    ];
    let rows: Vec<_> = v["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(cells)
        .collect();
    let mut width = HEAD.map(str::len);
    for (c, _) in &rows {
        for (w, cell) in width.iter_mut().zip(c) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = header(&v["summary"], p);
    let line = |cells: [&str; 8], color: Option<&str>| {
        let mut l = String::new();
        for (k, (cell, w)) in cells.iter().zip(width).enumerate() {
            let pad = " ".repeat(w.saturating_sub(cell.chars().count()));
            let text = match color {
                Some(c) if k == 1 => p.paint(c, cell),
                _ => (*cell).to_owned(),
            };
            l.push_str(&text);
            if k + 1 < cells.len() {
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
                 "inhibited":false},
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
