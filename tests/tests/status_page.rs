//! The live status page, opened in a real headless Chromium (Debian's
//! `chromium`, which `scripts/test` installs) while a run goes on: the
//! agents, messages, positions, open orders, fills, risk limits and the
//! equity curve are on it. A screenshot is kept in
//! `target/test-artifacts/status-page.png`.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chromium(args: &[&str], profile: &std::path::Path) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(args)
        .output()
        .expect("chromium runs (scripts/test installs Debian's package)")
}

fn status_json(port: u16) -> Option<serde_json::Value> {
    serde_json::from_str(&support::http_get(port, "/status.json")?).ok()
}

#[test]
fn the_status_page_shows_a_run_as_it_goes_on_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    // Paced to last a while: 3,000 one-minute bars at 12,000 times real time.
    std::fs::write(
        dir.path().join("paced.toml"),
        "[data]\ncandles = 3000\nspeed = 12000.0\n",
    )
    .unwrap();
    let port = support::free_port();
    let address = format!("127.0.0.1:{port}");
    let mut run = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
        .args(["run", "--config", "paced.toml", "--status", &address])
        .current_dir(dir.path())
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = status_json(port);
        let fills = status
            .as_ref()
            .map_or(0, |s| s["recent_fills"].as_array().map_or(0, Vec::len));
        if fills > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no fill on the status page: {status:?}"
        );
        assert!(run.try_wait().unwrap().is_none(), "the run ended first");
        std::thread::sleep(Duration::from_millis(100));
    }
    let profile = dir.path().join("chromium-profile");
    let url = format!("http://{address}/");
    let dom = chromium(
        &["--virtual-time-budget=4000", "--dump-dom", &url],
        &profile,
    );
    let dom = String::from_utf8_lossy(&dom.stdout).to_string();
    for agent in ["collector", "signals", "risk", "trader", "report"] {
        assert!(
            dom.contains(&format!("<td>{agent}</td>")),
            "agent {agent}:\n{dom}"
        );
    }
    assert!(dom.contains("<td>started</td>"), "{dom}");
    for limit in ["max_drawdown", "max_daily_loss", "max_open_positions"] {
        assert!(
            dom.contains(&format!("<td>{limit}</td>")),
            "{limit}:\n{dom}"
        );
    }
    let table_rows = |id: &str| {
        let start = dom.find(&format!("id=\"{id}\"")).expect(id);
        let end = start + dom[start..].find("</table>").unwrap();
        dom[start..end].matches("<tr>").count() - 1
    };
    assert!(table_rows("fills") >= 1, "fills listed:\n{dom}");
    assert!(table_rows("bus") >= 5, "subscriptions listed:\n{dom}");
    let curve = dom.split("id=\"curve\"").nth(1).expect("the equity curve");
    let points = curve
        .split("points=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(
        points.split(' ').count() > 10,
        "the curve is drawn: {points:?}"
    );
    assert!(dom.contains("candles · market time 2023-"), "{dom}");

    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status-page.png");
    let taken = chromium(
        &[
            "--window-size=1200,1000",
            "--virtual-time-budget=4000",
            &format!("--screenshot={}", shot.display()),
            &url,
        ],
        &profile,
    );
    assert!(taken.status.success() && shot.metadata().unwrap().len() > 10_000);

    let interrupted = Command::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    assert!(run.wait().unwrap().success());
    // Never on an open address.
    let out = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
        .args(["run", "--status", "0.0.0.0:8080"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}
