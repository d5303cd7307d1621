//! An idle `rpcd_client::Server` sleeps: while no invocation, reply or stop comes, none of
//! its threads (`rpcd-dispatcher`, `rpcd-worker-N`) wakes up, before and after a daemon
//! restart; and it still stops promptly, idle or with the daemon gone.
//!
//! Wake-ups are counted by the kernel: each thread's `voluntary_ctxt_switches` +
//! `nonvoluntary_ctxt_switches` in `/proc/self/task/<tid>/status`, before and after an idle
//! interval. The tests of this file run one at a time, as they tell the servers' threads
//! apart by name.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rpcd_client::{CallOptions, Client, Server, ServerOptions};
use rpcd_tests::{tempdir, wait_until, Daemon};

/// How long a server is left alone while its wake-ups are counted.
const IDLE: Duration = Duration::from_secs(1);

/// Wake-ups allowed per thread over [`IDLE`]: none is periodic, so anything above a
/// stray one or two (the thread's last steps into its wait) is polling.
const WAKE_UPS_MAX: u64 = 2;

/// How long `stop` (or a drop) may take on an idle server.
const STOP_MAX: Duration = Duration::from_millis(500);

/// The tests here count threads by name: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn deadline(ms: u64) -> CallOptions {
    CallOptions::new(Some(Duration::from_millis(ms)), false)
}

/// Whether a thread name is one of a serving app's (as `comm` shows it, 15 bytes at most).
fn is_server_thread(name: &str) -> bool {
    name == "rpcd-dispatcher" || name.starts_with("rpcd-worker-") || name == "rpcd-client-rea"
}

/// The context switches so far of each of this process's serving threads, by thread id
/// (with the thread's name).
fn switches() -> BTreeMap<u64, (String, u64)> {
    let mut out = BTreeMap::new();
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread may end between the listing and the reads: skip it.
        let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else {
            continue;
        };
        let name = name.trim_end().to_owned();
        if !is_server_thread(&name) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let count: u64 = status
            .lines()
            .filter(|l| {
                l.starts_with("voluntary_ctxt_switches:")
                    || l.starts_with("nonvoluntary_ctxt_switches:")
            })
            .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
            .sum();
        out.insert(tid, (name, count));
    }
    out
}

/// The wake-ups of each serving thread over [`IDLE`], as `(name, wake-ups)`, sorted by name.
fn idle_wake_ups() -> Vec<(String, u64)> {
    // Let the threads settle into their waits after what came before.
    thread::sleep(Duration::from_millis(200));
    let before = switches();
    thread::sleep(IDLE);
    let after = switches();
    let mut woke: Vec<(String, u64)> = after
        .iter()
        .filter_map(|(tid, (name, n))| {
            let (_, was) = before.get(tid)?;
            Some((name.clone(), n - was))
        })
        .collect();
    woke.sort();
    woke
}

/// Asserts that the dispatcher and `workers + 1` pool threads were seen, and that none of
/// the serving threads woke more than [`WAKE_UPS_MAX`] times over [`IDLE`].
fn assert_asleep(when: &str, workers: usize) {
    let woke = idle_wake_ups();
    eprintln!("{when}: wake-ups over {IDLE:?} per thread: {woke:?}");
    let seen = |prefix: &str| woke.iter().filter(|(n, _)| n.starts_with(prefix)).count();
    assert_eq!(seen("rpcd-dispatcher"), 1, "{when}: threads {woke:?}");
    assert_eq!(
        seen("rpcd-worker-"),
        workers + 1,
        "{when}: threads {woke:?}"
    );
    assert!(
        woke.iter().all(|(_, n)| *n <= WAKE_UPS_MAX),
        "{when}: an idle server's threads woke up (wake-ups over {IDLE:?}): {woke:?}"
    );
}

/// Runs `f` and returns how long it took.
fn timed(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

/// An idle server makes no periodic wake-ups: not the dispatcher (it waits for the
/// connection to close or a stop), not the worker reading the connection (it blocks in the
/// read), not the others (they wait for work). It still serves calls from other apps and
/// from its own; after the daemon restarts it reconnects, registers again, and sleeps
/// again on the new connection; and it stops promptly.
#[test]
fn an_idle_server_does_not_wake_up() {
    let _one_at_a_time = serial();
    let dir = tempdir();
    let mut a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let server_client = Client::connect_to(&a.socket).unwrap();
    let workers = 2;
    let server = Server::with_options(&server_client, ServerOptions::new(workers, 8)).unwrap();
    server
        .register_fn("idle.double", |(n,): (u64,)| Ok::<_, String>(n * 2))
        .unwrap();
    let me = server_client.daemon().listen;
    let caller = Client::connect_to(&a.socket).unwrap();
    let double = |client: &Client, n: u64| {
        client.call_with::<_, u64>(me.as_str(), "idle.double", &(n,), deadline(10_000))
    };
    assert_eq!(double(&caller, 2).unwrap(), 4);
    // A call from the serving app itself: its reply is read by the pool.
    assert_eq!(double(&server_client, 3).unwrap(), 6);

    assert_asleep("serving", workers);
    assert_eq!(double(&caller, 4).unwrap(), 8, "served after sleeping");

    a.restart_after_kill(dir.path(), "a");
    assert!(
        wait_until(Duration::from_secs(20), || {
            server.stats().reregistrations >= 1
                && a.connect("probe")
                    .list()
                    .is_ok_and(|l| l.contains(&"idle.double".to_owned()))
        }),
        "the server did not re-register; last error: {:?}",
        server.last_error()
    );
    let caller = Client::connect_to(&a.socket).unwrap();
    assert_eq!(double(&caller, 5).unwrap(), 10);
    assert_eq!(server_client.generation(), 2);

    assert_asleep("after the daemon restarted", workers);
    assert_eq!(double(&caller, 6).unwrap(), 12, "served after sleeping");

    let took = timed(|| server.stop());
    assert!(took < STOP_MAX, "stop took {took:?}");
}

/// A server left idle stops promptly, by `stop` and by a drop, and so does one whose daemon
/// is gone (its dispatcher waiting to reconnect).
#[test]
fn an_idle_server_stops_promptly() {
    let _one_at_a_time = serial();
    let dir = tempdir();
    let mut a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let client = Client::connect_to(&a.socket).unwrap();
    let me = client.daemon().listen;

    let server = Server::with_options(&client, ServerOptions::new(2, 8)).unwrap();
    server
        .register_fn("idle.one", |(): ()| Ok::<_, String>(1u8))
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    let took = timed(|| server.stop());
    assert!(took < STOP_MAX, "stop took {took:?}");
    assert!(!client.list().unwrap().contains(&"idle.one".to_owned()));

    let server = Server::with_options(&client, ServerOptions::new(2, 8)).unwrap();
    server
        .register_fn("idle.one", |(): ()| Ok::<_, String>(1u8))
        .unwrap();
    assert_eq!(
        client
            .call_with::<_, u8>(me.as_str(), "idle.one", &(), deadline(10_000))
            .unwrap(),
        1
    );
    thread::sleep(Duration::from_millis(300));
    let took = timed(|| drop(server));
    assert!(took < STOP_MAX, "drop took {took:?}");

    let server = Server::with_options(&client, ServerOptions::new(2, 8)).unwrap();
    server
        .register_fn("idle.one", |(): ()| Ok::<_, String>(1u8))
        .unwrap();
    a.process.kill();
    assert!(
        wait_until(Duration::from_secs(10), || !client.is_connected()),
        "the connection did not close with the daemon"
    );
    // Past a few reconnect attempts, into a longer backoff.
    thread::sleep(Duration::from_millis(400));
    let took = timed(|| server.stop());
    assert!(took < STOP_MAX, "stop without a daemon took {took:?}");
}
