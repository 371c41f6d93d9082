//! SPEC §12 "A stored delivery belongs to its route": queued deliveries follow
//! their route's identity (its `name`, or a fingerprint of its events) through
//! reloads and restarts that insert, reorder, remove, rename or re-mode routes,
//! on the disk store and on Redis. Nothing is ever delivered through another
//! route; what has no route any more waits as an orphan.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::redis::RedisServer;
use common::*;
use hookgate::queue::{Legacy, Meta, NewEntry, RouteKey};

/// Where the queue is stored.
enum Store {
    Disk(tempfile::TempDir),
    Redis(RedisServer),
}

impl Store {
    fn disk() -> Store {
        Store::Disk(tempfile::tempdir().unwrap())
    }

    fn redis() -> Store {
        Store::Redis(RedisServer::start())
    }

    fn table(&self) -> String {
        match self {
            Store::Disk(d) => format!("[queue]\npath = \"{}\"", d.path().display()),
            Store::Redis(r) => format!(
                "[queue]\nstore = \"redis\"\nvisibility_timeout = \"2s\"\n[queue.redis]\nurl = \"{}\"\ntimeout = \"1s\"",
                r.url()
            ),
        }
    }
}

/// A route of the `tampa` source: name (`""`: unnamed), events, app, queue or sync.
struct R<'a>(&'a str, &'a str, SocketAddr, bool);

fn config(store: &Store, source: &str, routes: &[R<'_>]) -> String {
    let mut text = format!(
        "[server]\nshutdown_grace = \"1s\"\n{}\n\n[sources.{source}]\npath = \"/webhooks/tampa\"\nprovider = \"tampa\"\nsecrets = [\"{SECRET}\"]\n",
        store.table()
    );
    for R(name, events, app, queue) in routes {
        text.push_str(&format!(
            "\n[[sources.{source}.routes]]\nevents = [\"{events}\"]\nupstream = \"http://{app}/in\"\ntimeout = \"1s\"\n"
        ));
        if !name.is_empty() {
            text.push_str(&format!("name = \"{name}\"\n"));
        }
        if *queue {
            text.push_str("delivery = \"queue\"\nretry = { backoff = \"20ms\", max_backoff = \"100ms\" }\n");
        }
    }
    text
}

async fn deliver(gw: &Gateway, source: &str, id: &str, event_type: &str) {
    let r = gw.deliver(source, &tampa_body(id, event_type), None, None).await;
    assert_eq!(r.status, 202, "{}", r.text());
}

fn down() -> Behavior {
    Behavior::Answer(503, "down", Duration::ZERO)
}

/// The delivery IDs an app has received, each once.
fn ids(up: &mut Upstream) -> std::collections::BTreeSet<String> {
    up.drain().iter().map(|r| r.headers["x-hookgate-delivery-id"].to_str().unwrap().to_owned()).collect()
}

async fn routes(gw: &Gateway) -> Vec<serde_json::Value> {
    gw.admin_json("/queue").await["routes"].as_array().unwrap().clone()
}

/// After a reload took a route away: attempts already under way end (against
/// the down app), then the app comes up; what it gets from now on was sent
/// after the reload.
async fn settle(app: &mut Upstream) {
    tokio::time::sleep(Duration::from_millis(300)).await; // attempts started before the reload end
    app.drain();
    app.set(ok_upstream());
}

/// Waits until `up` has received every ID of `want` (and says what it got).
async fn received(up: &mut Upstream, want: &[&str]) -> std::collections::BTreeSet<String> {
    let mut got = std::collections::BTreeSet::new();
    let want: std::collections::BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
    let done = eventually(Duration::from_secs(10), async || {
        got.extend(ids(up));
        want.is_subset(&got)
    })
    .await;
    assert!(done, "wanted {want:?}, got {got:?}");
    got
}

/// Issue #31's reproduction: three `order.created` wait while the orders app
/// is down; a reload inserts a `billing.*` queue route above; both apps come
/// up. The orders app gets all three, the billing app none.
async fn inserting_a_route_above_keeps_the_queue_with_its_route(store: Store) {
    let mut orders = spawn_upstream(down()).await;
    let billing = spawn_upstream(ok_upstream()).await;
    let before = config(&store, "tampa", &[R("", "order.*", orders.addr, true)]);
    let gw = spawn_gateway(&before).await;
    for id in ["o-1", "o-2", "o-3"] {
        deliver(&gw, "tampa", id, "order.created").await;
    }
    assert!(eventually(Duration::from_secs(5), async || orders.hits() >= 3).await, "each was tried");
    let after = config(&store, "tampa", &[R("", "billing.*", billing.addr, true), R("", "order.*", orders.addr, true)]);
    gw.app.reload(common::config(&after)).unwrap();
    orders.drain();
    orders.set(ok_upstream());
    assert_eq!(received(&mut orders, &["o-1", "o-2", "o-3"]).await.len(), 3);
    assert_eq!(billing.hits(), 0, "nothing went to the billing app");
    gw.shutdown().await;
}

#[tokio::test]
async fn inserting_a_route_above_keeps_the_queue_with_its_route_on_disk() {
    inserting_a_route_above_keeps_the_queue_with_its_route(Store::disk()).await;
}

#[tokio::test]
async fn inserting_a_route_above_keeps_the_queue_with_its_route_on_redis() {
    inserting_a_route_above_keeps_the_queue_with_its_route(Store::redis()).await;
}

/// The same across a restart with a reordered config (no SIGHUP), and a route
/// pointed at a new URL keeps its queue (the upstream is not its identity).
async fn a_restart_with_reordered_routes_and_a_new_upstream(store: Store) {
    let mut old_orders = spawn_upstream(down()).await;
    let mut new_orders = spawn_upstream(ok_upstream()).await;
    let billing = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&config(
        &store,
        "tampa",
        &[R("orders", "order.*", old_orders.addr, true), R("billing", "billing.*", billing.addr, true)],
    ))
    .await;
    deliver(&gw, "tampa", "r-1", "order.created").await;
    deliver(&gw, "tampa", "r-2", "order.paid").await;
    assert!(eventually(Duration::from_secs(5), async || old_orders.hits() >= 2).await);
    gw.shutdown().await;
    let gw = spawn_gateway(&config(
        &store,
        "tampa",
        &[R("billing", "billing.*", billing.addr, true), R("orders", "order.*", new_orders.addr, true)],
    ))
    .await;
    assert_eq!(received(&mut new_orders, &["r-1", "r-2"]).await.len(), 2);
    assert_eq!(billing.hits(), 0);
    old_orders.drain();
    gw.shutdown().await;
}

#[tokio::test]
async fn a_restart_with_reordered_routes_and_a_new_upstream_on_disk() {
    a_restart_with_reordered_routes_and_a_new_upstream(Store::disk()).await;
}

#[tokio::test]
async fn a_restart_with_reordered_routes_and_a_new_upstream_on_redis() {
    a_restart_with_reordered_routes_and_a_new_upstream(Store::redis()).await;
}

/// A reload that makes a queue route sync keeps a worker until what it stored
/// is delivered; `/queue` lists it as draining meanwhile, then no more.
async fn a_route_switched_to_sync_drains_what_it_stored(store: Store) {
    let mut app = spawn_upstream(down()).await;
    let gw = spawn_gateway(&config(&store, "tampa", &[R("orders", "order.*", app.addr, true)])).await;
    deliver(&gw, "tampa", "d-1", "order.created").await;
    deliver(&gw, "tampa", "d-2", "order.created").await;
    assert!(eventually(Duration::from_secs(5), async || app.hits() >= 2).await);
    gw.app.reload(common::config(&config(&store, "tampa", &[R("orders", "order.*", app.addr, false)]))).unwrap();
    let listed = routes(&gw).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0]["route"].as_str(), listed[0]["draining"].as_bool()), (Some("orders"), Some(true)));
    assert_eq!(listed[0]["orphaned"], false);
    app.drain();
    app.set(ok_upstream());
    received(&mut app, &["d-1", "d-2"]).await;
    assert!(eventually(Duration::from_secs(5), async || routes(&gw).await.is_empty()).await, "listed until drained");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_route_switched_to_sync_drains_what_it_stored_on_disk() {
    a_route_switched_to_sync_drains_what_it_stored(Store::disk()).await;
}

#[tokio::test]
async fn a_route_switched_to_sync_drains_what_it_stored_on_redis() {
    a_route_switched_to_sync_drains_what_it_stored(Store::redis()).await;
}

/// A removed route's deliveries wait as orphans (listed, never delivered
/// elsewhere), are its own again when it comes back, and can be moved to
/// another route or deleted through the admin API.
async fn orphans_wait_come_back_move_and_delete(store: Store) {
    let mut orders = spawn_upstream(down()).await;
    let mut other = spawn_upstream(ok_upstream()).await;
    let other_addr = other.addr;
    let with = |name: &'static str, addr| {
        config(&store, "tampa", &[R(name, "order.*", addr, true), R("rest", "*", other_addr, false)])
    };
    let without = config(&store, "tampa", &[R("rest", "*", other_addr, false)]);
    let gw = spawn_gateway(&with("orders", orders.addr)).await;
    deliver(&gw, "tampa", "x-1", "order.created").await;
    deliver(&gw, "tampa", "x-2", "order.created").await;
    assert!(eventually(Duration::from_secs(5), async || orders.hits() >= 2).await);

    // Removed: an orphan, listed under its identity, delivered nowhere.
    gw.app.reload(common::config(&without)).unwrap();
    settle(&mut orders).await;
    let orphan = async || routes(&gw).await.into_iter().find(|r| r["orphaned"] == true);
    assert!(eventually(Duration::from_secs(5), async || orphan().await.is_some()).await);
    let o = orphan().await.unwrap();
    assert_eq!((o["source"].as_str(), o["route"].as_str()), (Some("tampa"), Some("orders")));
    // (Redis: one taken just before the reload stays taken until it is claimed or moved.)
    let held = ["pending", "scheduled", "in_flight"].iter().map(|k| o[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(held, 2, "{o}");
    assert!(o["upstream"].is_null());
    // The admin API refuses what is not an orphan or has no target.
    let admin = |path: &str| format!("http://{}{path}", gw.admin);
    let r = send(&admin("/queue/orphans/tampa/orders/move?to=nope"), "POST", &[], "").await;
    assert_eq!((r.status.as_u16(), r.error_code()), (404, "unknown_route".to_owned()));
    let r = send(&admin("/queue/orphans/tampa/orders/move"), "POST", &[], "").await;
    assert_eq!(r.status, 400);
    let r = send(&admin("/queue/orphans/tampa/rest/move?to=rest"), "POST", &[], "").await;
    assert_eq!(r.status, 409, "a configured route is no orphan");
    tokio::time::sleep(Duration::from_millis(300)).await; // a window in which nothing may be delivered
    let before_restore = orders.drain();
    assert!(before_restore.is_empty(), "an orphan is not delivered");
    assert_eq!(other.drain().len(), 0, "nor through another route");

    // Restored: its own again, and delivered.
    gw.app.reload(common::config(&with("orders", orders.addr))).unwrap();
    received(&mut orders, &["x-1", "x-2"]).await;

    // Moved: the route was renamed, so its waiting deliveries became an orphan; handed over by name.
    orders.set(down());
    deliver(&gw, "tampa", "x-3", "order.created").await;
    assert!(eventually(Duration::from_secs(5), async || orders.hits() >= 3).await);
    let mut renamed_app = spawn_upstream(ok_upstream()).await;
    gw.app.reload(common::config(&with("orders-v2", renamed_app.addr))).unwrap();
    assert!(eventually(Duration::from_secs(5), async || orphan().await.is_some()).await);
    let r = send(&admin("/queue/orphans/tampa/orders-v2/move?to=orders"), "POST", &[], "").await;
    assert_eq!((r.status.as_u16(), r.error_code()), (409, "not_orphaned".to_owned()));
    let r = send_orphan_op(&admin("/queue/orphans/tampa/orders/move?to=orders-v2"), "POST").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["moved"], 1);
    received(&mut renamed_app, &["x-3"]).await;

    // Deleted.
    renamed_app.set(down());
    deliver(&gw, "tampa", "x-4", "order.created").await;
    assert!(eventually(Duration::from_secs(5), async || renamed_app.hits() >= 2).await);
    gw.app.reload(common::config(&without)).unwrap();
    assert!(eventually(Duration::from_secs(5), async || orphan().await.is_some()).await);
    let r = send_orphan_op(&admin("/queue/orphans/tampa/orders-v2"), "DELETE").await;
    assert_eq!((r.status.as_u16(), r.json()["deleted"].as_u64()), (200, Some(1)), "{}", r.text());
    assert!(orphan().await.is_none());
    orders.drain();
    other.drain();
    gw.shutdown().await;
}

#[tokio::test]
async fn orphans_wait_come_back_move_and_delete_on_disk() {
    orphans_wait_come_back_move_and_delete(Store::disk()).await;
}

#[tokio::test]
async fn orphans_wait_come_back_move_and_delete_on_redis() {
    orphans_wait_come_back_move_and_delete(Store::redis()).await;
}

/// What a route's worker had taken and not yet started when its route went
/// away is handed back: moved to another route meanwhile, none of it goes
/// out through the old route when that returns (before, the worker kept it
/// and sent it there), and the returning route delivers what it gets anew.
/// On disk the orphan cannot be moved while an attempt started before the
/// removal is under way (409 `attempts_in_flight`): its outcome would be
/// written back beside the moved delivery.
async fn what_was_taken_when_a_route_went_away_goes_with_its_orphan(store: Store) {
    let disk = matches!(store, Store::Disk(_));
    let mut orders = spawn_upstream(down()).await;
    let mut v2 = spawn_upstream(ok_upstream()).await;
    // One attempt at a time, each given 2 s: the worker takes the next two
    // ahead (while attempts are quick) and holds them.
    let one_at_a_time = |text: String| {
        text.replace("delivery = \"queue\"\n", "delivery = \"queue\"\nconcurrency = 1\n")
            .replace("timeout = \"1s\"\n", "timeout = \"2s\"\n")
    };
    let v2_route = R("orders-v2", "invoice.*", v2.addr, true);
    let with = one_at_a_time(config(
        &store,
        "tampa",
        &[R("orders", "order.*", orders.addr, true), R("orders-v2", "invoice.*", v2.addr, true)],
    ));
    let without = one_at_a_time(config(&store, "tampa", &[v2_route]));
    let gw = spawn_gateway(&with).await;
    let all = ["w-1", "w-2", "w-3", "w-4", "w-5", "w-6"];
    for id in all {
        deliver(&gw, "tampa", id, "order.created").await;
    }
    // Each failed quickly twice: the worker now takes ahead of its one slot.
    assert!(eventually(Duration::from_secs(10), async || orders.hits() >= 2 * all.len()).await);
    // The next attempt hangs until its 2 s timeout; meanwhile the two next
    // retries (due within 100 ms) are taken and wait for the slot.
    let hits = orders.hits();
    orders.set(Behavior::Answer(503, "down", Duration::from_secs(3)));
    assert!(eventually(Duration::from_secs(5), async || orders.hits() > hits).await);
    tokio::time::sleep(Duration::from_millis(400)).await; // the retries fall due and are taken
    gw.app.reload(common::config(&without)).unwrap();
    orders.drain();
    orders.set(ok_upstream());

    let admin = format!("http://{}/queue/orphans/tampa/orders/move?to=orders-v2", gw.admin);
    let mut r = send(&admin, "POST", &[], "").await;
    if disk {
        // The hanging attempt times out 2 s after it started.
        assert_eq!((r.status.as_u16(), r.error_code()), (409, "attempts_in_flight".to_owned()), "{}", r.text());
        // What was taken ahead is no longer counted (the reload woke the
        // worker): the hanging attempt at most, not the two behind it.
        let in_flight = async || {
            let orphan = routes(&gw).await.into_iter().find(|r| r["orphaned"] == true).unwrap();
            orphan["in_flight"].as_u64().unwrap()
        };
        let counted = eventually(Duration::from_secs(2), async || in_flight().await <= 1).await;
        assert!(counted, "in_flight {}", in_flight().await);
    }
    if r.status == 409 {
        r = send_orphan_op(&admin, "POST").await;
    }
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["moved"], all.len(), "{}", r.text());
    received(&mut v2, &all).await;

    gw.app.reload(common::config(&with)).unwrap();
    deliver(&gw, "tampa", "w-7", "order.created").await;
    let got = received(&mut orders, &["w-7"]).await;
    assert_eq!(got.into_iter().collect::<Vec<_>>(), ["w-7"], "only what the returning route got anew");
    gw.shutdown().await;
}

#[tokio::test]
async fn what_was_taken_when_a_route_went_away_goes_with_its_orphan_on_disk() {
    what_was_taken_when_a_route_went_away_goes_with_its_orphan(Store::disk()).await;
}

#[tokio::test]
async fn what_was_taken_when_a_route_went_away_goes_with_its_orphan_on_redis() {
    what_was_taken_when_a_route_went_away_goes_with_its_orphan(Store::redis()).await;
}

/// A source's name is part of its routes' identity: renaming it orphans their
/// deliveries (listed, not delivered) until the name returns.
#[tokio::test]
async fn renaming_a_source_orphans_its_queue_until_the_name_returns() {
    let store = Store::disk();
    let mut app = spawn_upstream(down()).await;
    let gw = spawn_gateway(&config(&store, "tampa", &[R("orders", "order.*", app.addr, true)])).await;
    deliver(&gw, "tampa", "n-1", "order.created").await;
    assert!(eventually(Duration::from_secs(5), async || app.hits() >= 1).await);
    gw.app.reload(common::config(&config(&store, "tampa2", &[R("orders", "order.*", app.addr, true)]))).unwrap();
    settle(&mut app).await;
    let listed = async || routes(&gw).await;
    assert!(
        eventually(Duration::from_secs(5), async || listed()
            .await
            .iter()
            .any(|r| r["source"] == "tampa" && r["route"] == "orders" && r["orphaned"] == true))
        .await
    );
    app.drain();
    gw.app.reload(common::config(&config(&store, "tampa", &[R("orders", "order.*", app.addr, true)]))).unwrap();
    received(&mut app, &["n-1"]).await;
    gw.shutdown().await;
}

fn legacy_entry(id: &str, event_type: &str, position: usize) -> NewEntry {
    NewEntry {
        meta: Meta {
            source: "tampa".into(),
            route: position,
            id: id.into(),
            event_type: event_type.into(),
            query: None,
            received_ms: hookgate::queue::unix_ms(std::time::SystemTime::now()),
            log: None,
            replay: false,
            order_key: None,
        },
        // As stored: the headers a sync route would forward.
        headers: http::HeaderMap::from_iter([(
            http::HeaderName::from_static("x-hookgate-delivery-id"),
            http::HeaderValue::from_str(id).unwrap(),
        )]),
        body: bytes::Bytes::from_static(b"{}"),
    }
}

/// A store written by the previous format (keys by route position) opens and
/// delivers each entry through the route now at its position when that route
/// matches its event type; an entry whose position now holds a route that
/// does not match it is kept as the orphan `@<position>`, not misdelivered.
async fn a_store_written_by_position_migrates(store: Store) {
    let mut orders = spawn_upstream(ok_upstream()).await;
    let billing = spawn_upstream(ok_upstream()).await;
    // The config the store was written with had orders at position 1.
    let cfg = config(&store, "tampa", &[R("", "billing.*", billing.addr, true), R("", "order.*", orders.addr, true)]);
    let written = [("l-1", "order.created", 1), ("l-2", "order.paid", 1), ("l-3", "order.created", 0)];
    match &store {
        Store::Disk(dir) => {
            let q = hookgate::queue::disk::DiskQueue::start(dir.path().to_owned(), true, Legacy::default()).unwrap();
            for (id, et, pos) in written {
                q.enqueue(RouteKey::legacy("tampa", pos), legacy_entry(id, et, pos)).await.unwrap();
            }
        }
        Store::Redis(r) => {
            let rc = hookgate::config::RedisConfig {
                target: hookgate::config::RedisTarget::Single(r.url()),
                key_prefix: "hookgate:q:".into(),
                timeout: Duration::from_secs(1),
                roots: None,
            };
            let q = hookgate::queue::redis::RedisQueue::new(&rc, Duration::from_secs(2)).unwrap();
            for (id, et, pos) in written {
                q.enqueue(&RouteKey::legacy("tampa", pos), &legacy_entry(id, et, pos)).await.unwrap();
            }
            assert_eq!(r.cli(&["XLEN", "hookgate:q:{tampa:1}:s"]), "2", "the previous key layout");
        }
    }
    // The disk store may take a moment to let go of its lock; the gateway opens it when it can.
    let gw = spawn_gateway(&cfg).await;
    assert_eq!(received(&mut orders, &["l-1", "l-2"]).await.len(), 2);
    let orphan = async || routes(&gw).await.into_iter().find(|r| r["route"] == "@0");
    assert!(eventually(Duration::from_secs(10), async || orphan().await.is_some()).await, "{:?}", routes(&gw).await);
    let o = orphan().await.unwrap();
    assert_eq!((o["orphaned"].as_bool(), o["pending"].as_u64()), (Some(true), Some(1)), "{o}");
    assert_eq!(billing.hits(), 0, "the entry at position 0 was an order, not a billing event");
    if let Store::Redis(r) = &store {
        assert_eq!(r.cli(&["EXISTS", "hookgate:q:{tampa:1}:s"]), "0", "the legacy keys are gone");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_store_written_by_position_migrates_on_disk() {
    a_store_written_by_position_migrates(Store::disk()).await;
}

#[tokio::test]
async fn a_store_written_by_position_migrates_on_redis() {
    a_store_written_by_position_migrates(Store::redis()).await;
}

/// Route names: unique per source, a restricted alphabet; and two unnamed
/// queue routes with the same events would share a queue, so that is an error.
#[test]
fn route_names_are_checked() {
    let store = Store::disk();
    let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let err = |routes: &[R<'_>]| {
        hookgate::config::load_str(&config(&store, "tampa", routes), &|_| None).unwrap_err().to_string()
    };
    let e = err(&[R("orders", "a.*", a, true), R("orders", "b.*", a, false)]);
    assert!(e.contains("sources.tampa.routes[1].name") && e.contains("already used"), "{e}");
    for bad in ["12", "~x", "@1", "has space", "x/y"] {
        let e = err(&[R(bad, "a.*", a, true)]);
        assert!(e.contains("sources.tampa.routes[0].name"), "{bad}: {e}");
    }
    let e = err(&[R("", "a.*", a, true), R("", "a.*", a, true)]);
    assert!(e.contains("routes[1].name") && e.contains("give one of them a `name`"), "{e}");
    // Sync routes with the same events are fine (fan-out will want that).
    assert!(
        hookgate::config::load_str(
            &config(&store, "tampa", &[R("", "a.*", a, false), R("", "a.*", a, false)]),
            &|_| None
        )
        .is_ok()
    );
}
