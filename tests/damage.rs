//! SPEC §12 "Storage damage is never silent": a real disk queue directory
//! with 300 acknowledged deliveries is copied and damaged the ways a disk or
//! an operator damages it, then opened by a gateway. Whatever cannot be read
//! is counted as lost (`/queue`'s `lost`, `hookgate_queue_lost_total`) and
//! logged at ERROR; what can be read is kept and delivered.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const STORED: u64 = 300;

/// One way of damaging a copied queue directory.
type Damage = Box<dyn Fn(&Path)>;

fn config(dir: &Path, app: std::net::SocketAddr, concurrency: u32) -> String {
    format!(
        "[server]\nshutdown_grace = \"1s\"\n[queue]\npath = \"{}\"\n[sources.t]\npath = \"/t\"\nprovider = \"generic\"\nsecrets = [\"s\"]\n[sources.t.verify]\nscheme = \"token\"\nsignature_header = \"X-Token\"\n[[sources.t.routes]]\nname = \"r\"\nevents = [\"*\"]\nupstream = \"http://{app}/\"\ndelivery = \"queue\"\nconcurrency = {concurrency}\n",
        dir.display()
    )
}

/// A queue directory holding STORED acknowledged deliveries (nothing attempted).
async fn prepared(root: &Path) -> PathBuf {
    let dir = root.join("original");
    let app = dead_addr().await;
    let gw = spawn_gateway(&config(&dir, app, 0)).await;
    for i in 0..STORED {
        let r = send(&gw.url("/t"), "POST", &h(&[("X-Token", "s")]), format!("{{\"n\":{i}}}")).await;
        assert_eq!(r.status, 202);
    }
    gw.shutdown().await;
    dir
}

/// Copies a closed queue directory. The store's background threads may still
/// retire a journal for a moment after the gateway stopped (fjall deletes a
/// flushed journal on its own thread), so a file that vanishes mid-copy starts
/// the copy over, a bounded number of times.
fn copy(from: &Path, to: &Path) {
    for _ in 0..50 {
        let _ = std::fs::remove_dir_all(to);
        match copy_tree(from, to) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("copying {}: {e}", from.display()),
        }
    }
    panic!("{} kept changing while it was copied", from.display());
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}

fn journals(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
        .collect()
}

/// How much of a (preallocated) journal holds data: up to its last non-zero byte.
fn used(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i as u64 + 1)
}

/// Opens `dir` with a gateway whose app takes everything; what is then
/// delivered, and what `/queue` says was lost.
async fn outcome(dir: &Path) -> (u64, u64) {
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&config(dir, up.addr, 16)).await;
    let queue = async || send(&format!("http://{}/queue", gw.admin), "GET", &[], "").await;
    assert!(eventually(Duration::from_secs(10), async || queue().await.status == 200).await, "the store opened");
    let lost = queue().await.json()["lost"].as_u64().unwrap();
    // Everything readable is delivered.
    let settled = eventually(Duration::from_secs(10), async || {
        let r = queue().await.json();
        let route = &r["routes"][0];
        route.is_null() || (route["pending"] == 0 && route["scheduled"] == 0 && route["in_flight"] == 0)
    })
    .await;
    assert!(settled);
    let delivered = up.hits() as u64;
    let metrics = gw.metrics().await;
    if lost > 0 {
        assert!(metrics.contains("hookgate_queue_lost_total"), "{metrics}");
    }
    gw.shutdown().await;
    (delivered, lost)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_queue_files_are_never_silent() {
    let root = tempfile::tempdir().unwrap();
    let original = prepared(root.path()).await;
    let jnl = journals(&original);
    assert!(!jnl.is_empty(), "the store has a journal");
    let data = used(&jnl[0]);
    assert!(data > 8192, "300 deliveries fill more than 8 KB of journal: {data}");

    let cases: Vec<(&str, Damage)> = vec![
        ("journal deleted", Box::new(|d: &Path| journals(d).iter().for_each(|j| std::fs::remove_file(j).unwrap()))),
        ("journal emptied", Box::new(|d: &Path| journals(d).iter().for_each(|j| std::fs::write(j, b"").unwrap()))),
        (
            "journal truncated to half",
            Box::new(move |d: &Path| {
                let j = &journals(d)[0];
                std::fs::OpenOptions::new().write(true).open(j).unwrap().set_len(data / 2).unwrap();
            }),
        ),
        (
            "4 KB zeroed mid-journal",
            Box::new(move |d: &Path| {
                use std::io::{Seek as _, Write as _};
                let j = &journals(d)[0];
                let mut f = std::fs::OpenOptions::new().write(true).open(j).unwrap();
                f.seek(std::io::SeekFrom::Start(data / 2 - 2048)).unwrap();
                f.write_all(&[0u8; 4096]).unwrap();
            }),
        ),
        (
            "entries key space's current removed",
            Box::new(|d: &Path| std::fs::remove_file(d.join("keyspaces/1/current")).unwrap()),
        ),
        (
            "fresh key space's current removed",
            Box::new(|d: &Path| std::fs::remove_file(d.join("keyspaces/2/current")).unwrap()),
        ),
    ];
    let mut report = Vec::new();
    for (name, damage) in cases {
        let dir = root.path().join(name.replace(' ', "-"));
        copy(&original, &dir);
        damage(&dir);
        let (delivered, lost) = outcome(&dir).await;
        report.push(format!("{name}: delivered {delivered}, lost {lost}"));
        assert!(delivered + lost >= STORED, "{name}: {delivered} delivered + {lost} counted lost < {STORED} stored");
    }
    eprintln!("{}", report.join("\n"));
}

/// SPEC §17: deliveries found lost when the store opens reach `[[alerts]]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_sends_a_queue_lost_alert() {
    let root = tempfile::tempdir().unwrap();
    let original = prepared(root.path()).await;
    let dir = root.path().join("emptied");
    copy(&original, &dir);
    journals(&dir).iter().for_each(|j| std::fs::write(j, b"").unwrap());
    let mut receiver = spawn_upstream(ok_upstream()).await;
    let app = dead_addr().await;
    let text = format!("{}\n[[alerts]]\nurl = \"http://{}/alerts\"\n", config(&dir, app, 0), receiver.addr);
    let gw = spawn_gateway(&text).await;
    let got = tokio::time::timeout(Duration::from_secs(10), receiver.next()).await.expect("a queue_lost alert");
    let alert: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(alert["kind"], "queue_lost", "{alert}");
    assert!(alert["details"]["lost"].as_u64().unwrap() > 0, "{alert}");
    assert!(alert["message"].as_str().unwrap().contains("damaged"), "{alert}");
    gw.shutdown().await;
}
