//! `server.workers`: the public listener served by threads of their own, each with a
//! single-threaded runtime and a socket of its own on the port (`SO_REUSEPORT`), on a real
//! gateway process: every worker takes connections, a reload and a revocation reach requests on
//! all of them, and a stop drains them all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::stack::{Load, Options, Stack};

/// The CPU time (ns, from `schedstat`) of each of the process's threads named `worker-*`.
fn worker_cpu(pid: u32) -> BTreeMap<String, u64> {
    let mut cpu = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let name = name.trim();
        if !name.starts_with("worker-") {
            continue;
        }
        let schedstat = std::fs::read_to_string(dir.join("schedstat")).unwrap();
        let ns = schedstat.split(' ').next().unwrap().parse().unwrap();
        cpu.insert(name.to_owned(), ns);
    }
    cpu
}

/// Waits until each of `n` new connections in a row gets `status` from `url` (with `token` as
/// bearer, if given); panics after 2 s.
async fn every_new_connection_answers(url: &str, token: Option<&str>, n: usize, status: u16) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut seen = 0;
    while seen < n {
        if support::send("GET", url, &headers, String::new())
            .await
            .status
            == status
        {
            seen += 1;
        } else {
            seen = 0;
            assert!(Instant::now() < deadline, "{url} never answered {status}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_the_port_and_every_one_serves_reloads_revocations_and_a_stop() {
    let mut stack = Stack::start(Options {
        gateways: 1,
        gateway_server: "workers = 2".to_owned(),
        ..Options::default()
    })
    .await;
    let gw = &stack.gateways[0];
    let before = worker_cpu(gw.pid());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        ["worker-0", "worker-1"],
        "one thread per worker"
    );

    // 32 keep-alive connections: the kernel spreads them over both sockets (all on one has
    // odds of 2 in 2^32), and every request is answered.
    let token = stack.login("alice").await;
    let load = Load::start(&[gw.url("/api/x")], Some(&token), 32);
    let tally = load.stop_after(2000).await;
    assert_eq!(tally.count(Some(200)), tally.total(), "{tally:?}");
    let after = worker_cpu(gw.pid());
    for (name, ns) in &after {
        assert!(
            ns - before[name] > 1_000_000,
            "{name} served nothing: {before:?} -> {after:?}"
        );
    }

    // A reload reaches the requests of every worker.
    let path = stack.gateway_config_path(0);
    let original = std::fs::read_to_string(&path).unwrap();
    let backend = stack.backend.url();
    std::fs::write(
        &path,
        format!("{original}\n[[routes]]\npath_prefix = \"/new/\"\nupstream = \"{backend}\"\nauth = false\n"),
    )
    .unwrap();
    gw.signal("HUP");
    every_new_connection_answers(&gw.url("/new/x"), None, 16, 200).await;

    // So does a revocation: the workers share one cache.
    let r = stack
        .admin("DELETE", "/admin/users/alice/sessions", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    every_new_connection_answers(&gw.url("/api/x"), Some(&token), 16, 401).await;

    // A stop drains every worker, and the process ends well.
    let gw = &mut stack.gateways[0];
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
}
