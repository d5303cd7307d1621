//! A blocking caller sleeps once per call, and a serving app's pool no more than it needs:
//! no thread of the client library is woken by the daemon merely reading what it wrote.
//!
//! A thread blocked in a Unix socket's read is woken by the kernel whenever the other end
//! takes bytes from the socket (the socket has write space again), whatever the thread waits
//! for; one waiting in `poll` for `POLLIN` is not. So a caller blocked in its reply's read
//! was woken once when the daemon read its request, and once by the reply: two sleeps per
//! call where one does. The daemon paid as well, one inter-processor wake-up per read.
//!
//! Sleeps are counted by the kernel: the thread's `voluntary_ctxt_switches` in
//! `/proc/thread-self/status` (or, for the pool, the sum over its threads in
//! `/proc/self/task`). Counts, not times: a loaded machine adds involuntary switches, which
//! are not counted, and can only save sleeps (a reply already there when the caller looks).

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rpcd_client::tokio::Client as AsyncClient;
use rpcd_client::{CallOptions, Client, Server, ServerOptions};
use rpcd_tests::{tempdir, voluntary_switches, Daemon};

/// Calls made per measurement.
const CALLS: u64 = 2_000;

/// The tests here count threads by name: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `voluntary_ctxt_switches` of one `/proc` status file.
fn voluntary(status: &str) -> u64 {
    voluntary_switches(status).expect("voluntary_ctxt_switches in /proc status")
}

/// The calling thread's sleeps so far.
fn my_sleeps() -> u64 {
    voluntary(&std::fs::read_to_string("/proc/thread-self/status").expect("/proc/thread-self"))
}

/// The sleeps so far of this process's serving pool (`rpcd-worker-N` threads).
fn pool_sleeps() -> u64 {
    let mut sum = 0;
    for task in std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
    {
        // A thread may end between the listing and the reads: skip it.
        let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else {
            continue;
        };
        if !name.starts_with("rpcd-worker-") {
            continue;
        }
        if let Ok(status) = std::fs::read_to_string(task.path().join("status")) {
            sum += voluntary(&status);
        }
    }
    sum
}

/// A daemon and, on it, a serving app with two workers and `wake.double`.
struct Serving {
    // Dropped in this order: the server stops while its daemon still runs.
    server: Server,
    _client: Client,
    daemon: Daemon,
    _dir: tempfile::TempDir,
    /// The daemon's address, to call it at.
    me: String,
}

impl Serving {
    fn start() -> Serving {
        let dir = tempdir();
        let daemon = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
        let client = Client::connect_to(&daemon.socket).expect("connect");
        let server = Server::with_options(&client, ServerOptions::new(2, 8)).expect("server");
        server
            .register_fn("wake.double", |(n,): (u64,)| Ok::<_, String>(n * 2))
            .expect("register");
        let me = client.daemon().listen;
        Serving {
            server,
            _client: client,
            daemon,
            _dir: dir,
            me,
        }
    }
}

/// A caller's thread sleeps once per call (waiting for the reply), not twice: the daemon
/// reading its request does not wake it. The serving pool, one invocation at a time, sleeps
/// at most twice per invocation: the thread that reads it hands the reading on (one sleep
/// of its own, waiting to lead again) and its successor waits for the next invocation (one);
/// the daemon reading the result wakes neither.
#[test]
fn threads_sleep_only_for_what_they_wait_for() {
    let _one_at_a_time = serial();
    let serving = Serving::start();
    let me = serving.me.as_str();
    let caller = Client::connect_to(&serving.daemon.socket).unwrap();
    let options = CallOptions::new(Some(Duration::from_secs(10)), false);
    let call = |n: u64| {
        let doubled: u64 = caller.call_with(me, "wake.double", &(n,), options).unwrap();
        assert_eq!(doubled, n * 2);
    };
    for n in 0..200 {
        call(n);
    }

    let (mine, pool) = (my_sleeps(), pool_sleeps());
    for n in 0..CALLS {
        call(n);
    }
    let per_call = (my_sleeps() - mine) as f64 / CALLS as f64;
    let pool_per_call = (pool_sleeps() - pool) as f64 / CALLS as f64;
    eprintln!("sleeps per call: caller {per_call:.2}, serving pool {pool_per_call:.2}");
    assert!(
        per_call < 1.4,
        "the caller slept {per_call:.2} times per call: it is woken by more than its reply"
    );
    assert!(
        pool_per_call < 2.6,
        "the serving pool slept {pool_per_call:.2} times per invocation: more than hand-off \
         and wait"
    );
    serving.server.stop();
}

/// The async client, on a current-thread runtime: the runtime's thread sleeps once per
/// call, waiting for the reply, and is not woken by the daemon reading the request.
#[test]
fn an_async_caller_sleeps_once_per_call() {
    let _one_at_a_time = serial();
    let serving = Serving::start();
    let me = serving.me.as_str();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let per_call = runtime.block_on(async {
        let caller = AsyncClient::connect_to(&serving.daemon.socket)
            .await
            .unwrap();
        let options = CallOptions::new(Some(Duration::from_secs(10)), false);
        let call = |n: u64| {
            let caller = &caller;
            async move {
                let doubled: u64 = caller
                    .call_with(me, "wake.double", &(n,), options)
                    .await
                    .unwrap();
                assert_eq!(doubled, n * 2);
            }
        };
        for n in 0..200 {
            call(n).await;
        }
        let mine = my_sleeps();
        for n in 0..CALLS {
            call(n).await;
        }
        (my_sleeps() - mine) as f64 / CALLS as f64
    });
    eprintln!("sleeps per call: async caller {per_call:.2}");
    assert!(
        per_call < 1.4,
        "the async caller slept {per_call:.2} times per call: it is woken by more than its \
         reply"
    );
    serving.server.stop();
}
