//! The async API (`rpcd_client::tokio`, feature `tokio`) through real daemons: async stubs
//! from many tasks at once, async handlers called by `rpcctl`, the blocking client's errors
//! for the same causes, cancellation by dropping a call's future, and the `kv_async`
//! example.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rpcd_client::tokio::{Client as AsyncClient, Handler as AsyncHandler, Server as AsyncServer};
use rpcd_client::{CallError, CallOptions, Client, ClientOptions, Handler, Outcome, Server};
use rpcd_tests::{bin, example, tempdir, wait_until, Daemon, ProcessGuard};

#[rpcd_client::service]
trait Calc {
    /// `a + b`, tagged with the caller's task so replies cannot be swapped.
    fn add(&self, task: u32, a: i64, b: i64) -> (u32, i64);
    fn fail(&self, message: String) -> Result<u32, String>;
}

struct CalcImpl;

impl Calc for CalcImpl {
    fn add(&self, task: u32, a: i64, b: i64) -> (u32, i64) {
        (task, a + b)
    }
    fn fail(&self, message: String) -> Result<u32, String> {
        Err(message)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn deadline(ms: u64) -> CallOptions {
    CallOptions::default().with_deadline(Duration::from_millis(ms))
}

/// 32 tasks, each making 8 stub calls through one async client on A to the blocking
/// server on B: every reply is the task's own.
#[test]
fn async_stubs_from_32_tasks_through_two_daemons() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let server = Server::new(&Client::connect_to(&b.socket).expect("connect b")).expect("server");
    CalcImpl.serve(&server).expect("serve");
    runtime().block_on(async {
        let client = AsyncClient::connect_to(&a.socket).await.expect("connect a");
        let calc = CalcAsyncClient::new(&client, b.udp).with_options(deadline(20_000));
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..32u32 {
            let calc = calc.clone();
            tasks.spawn(async move {
                for i in 0..8i64 {
                    let got = calc.add(task, i, i64::from(task) * 100).await?;
                    assert_eq!(got, (task, i + i64::from(task) * 100));
                }
                calc.fail(format!("task {task}")).await
            });
        }
        let mut done = 0;
        while let Some(joined) = tasks.join_next().await {
            let err = joined.expect("task").expect_err("fail fails");
            assert!(
                matches!(&err, CallError::App(m) if m.starts_with("task ")),
                "{err:?}"
            );
            done += 1;
        }
        assert_eq!(done, 32);
        assert_eq!(client.generation(), 1);
    });
}

/// An async handler on A, called by `rpcctl call` (locally) and by the blocking client
/// from B: both get its reply.
#[test]
fn async_handler_called_by_rpcctl() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let rt = runtime();
    let server = rt.block_on(async {
        let client = AsyncClient::connect_to(&a.socket).await.expect("connect a");
        let server = AsyncServer::new(&client);
        server
            .register_fn("t.add", |(x, y): (i64, i64)| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok::<_, String>(x + y)
            })
            .await
            .expect("register");
        server
    });
    let out = Command::new(bin("rpcctl"))
        .arg("--socket")
        .arg(&a.socket)
        .args(["call", &a.udp.to_string(), "t.add", "2", "40"])
        .stdin(Stdio::null())
        .output()
        .expect("run rpcctl");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    let remote = Client::connect_to(&b.socket).expect("connect b");
    let sum: i64 = remote
        .call_with(a.udp, "t.add", &(1, 2), deadline(10_000))
        .expect("call");
    assert_eq!(sum, 3);
    rt.block_on(server.stop());
}

/// For the same causes the async client fails with exactly the blocking client's errors.
#[test]
fn errors_are_the_blocking_clients() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let server = Server::new(&Client::connect_to(&a.socket).expect("connect")).expect("server");
    CalcImpl.serve(&server).expect("serve");
    let blocking = Client::connect_to(&a.socket).expect("connect");
    let me = a.udp.to_string();
    let zero = CallOptions::default().with_deadline(Duration::ZERO);
    let cases: Vec<(&str, &str, CallOptions)> = vec![
        (me.as_str(), "no.such", deadline(5_000)),
        (me.as_str(), "calc.fail", deadline(5_000)),
        ("not a target", "calc.add", deadline(5_000)),
        (me.as_str(), "calc.add", zero),
        // Arguments the handler cannot decode: refused as bad_request.
        (me.as_str(), "calc.add", deadline(5_000)),
    ];
    let rt = runtime();
    let client = rt
        .block_on(AsyncClient::connect_to(&a.socket))
        .expect("connect");
    for (target, function, options) in &cases {
        let want = blocking
            .call_with::<_, u32>(*target, function, &("x",), *options)
            .expect_err("fails");
        let got = rt
            .block_on(client.call_with::<_, u32>(*target, function, &("x",), *options))
            .expect_err("fails");
        assert_eq!(got, want, "{function} on {target}");
    }
    // A reply of another type: the same decode error.
    let want = blocking
        .call_with::<_, String>(me.as_str(), "calc.add", &(1u32, 2, 3), deadline(5_000))
        .expect_err("decode");
    let got = rt
        .block_on(client.call_with::<_, String>(
            me.as_str(),
            "calc.add",
            &(1u32, 2, 3),
            deadline(5_000),
        ))
        .expect_err("decode");
    assert!(matches!(got, CallError::Decode(_)), "{got:?}");
    assert_eq!(got, want);
    // The daemon goes away: in-flight-less calls reconnect, then fail the same way.
    let options = ClientOptions::default();
    drop(server);
    drop(a);
    let want = blocking.ping().expect_err("no daemon");
    let got = rt.block_on(client.ping()).expect_err("no daemon");
    assert!(
        matches!(got, CallError::DaemonUnavailable { .. }),
        "{got:?}"
    );
    assert_eq!(got, want);
    let missing = dir.path().join("none.sock");
    let want = Client::connect_with(&missing, options.clone()).expect_err("none");
    let got = rt
        .block_on(AsyncClient::connect_with(&missing, options))
        .expect_err("none");
    assert_eq!(got.to_string(), want.to_string());
}

/// Dropping a call's future cancels the call: a blocking handler on B sees the cancel, an
/// async handler's future is dropped, and with one call per connection on A the next call
/// goes through at once.
#[test]
fn dropping_the_future_cancels_the_call() {
    let dir = tempdir();
    let tight = "[limits]\ncalls_per_connection_max = 1\n";
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(tight));
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let (seen_tx, seen) = mpsc::channel();
    let blocking_server =
        Server::new(&Client::connect_to(&b.socket).expect("connect b")).expect("server");
    blocking_server
        .register(
            "t.block",
            Handler::with_request(move |req| {
                let _ = seen_tx.send(req.wait_cancelled(Some(Duration::from_secs(20))));
                Outcome::Ok(rmp_serde::to_vec(&0u32).expect("encode"))
            }),
        )
        .expect("register");
    let rt = runtime();
    let dropped = Arc::new(AtomicUsize::new(0));
    let (async_server, client) = rt.block_on(async {
        let serving = AsyncClient::connect_to(&b.socket).await.expect("connect b");
        let server = AsyncServer::new(&serving);
        let dropped = Arc::clone(&dropped);
        server
            .register(
                "t.park",
                AsyncHandler::new(move |req| {
                    let guard = DropCounter(Arc::clone(&dropped));
                    async move {
                        let _guard = guard;
                        req.cancelled().await;
                        Outcome::Error("not reached: the future is dropped first".into())
                    }
                }),
            )
            .await
            .expect("register");
        let client = AsyncClient::connect_to(&a.socket).await.expect("connect a");
        (server, client)
    });
    let patience = Duration::from_millis(500);
    rt.block_on(async {
        let call = client.call_with::<_, u32>(b.udp, "t.block", &(), deadline(30_000));
        assert!(
            tokio::time::timeout(patience, call).await.is_err(),
            "t.block answered"
        );
    });
    assert_eq!(seen.recv_timeout(Duration::from_secs(20)), Ok(true));
    rt.block_on(async {
        let call = client.call_with::<_, u32>(b.udp, "t.park", &(), deadline(30_000));
        assert!(
            tokio::time::timeout(patience, call).await.is_err(),
            "t.park answered"
        );
    });
    assert!(wait_until(Duration::from_secs(20), || dropped
        .load(Ordering::SeqCst)
        == 1));
    assert_eq!(async_server.cancelled(), 1);
    let pong: Vec<u8> = rt
        .block_on(client.call_with(b.udp, "rpcd.echo", &[7u8], deadline(10_000)))
        .expect("the slot is free again");
    assert_eq!(pong, vec![7u8]);
    rt.block_on(async_server.stop());
}

/// Counts its drops.
struct DropCounter(Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// `kv_async serve` on B; `kv_async call` (the demo, one verb) and `kv_async fan` with 32
/// tasks from A; the blocking `kv_client` talks to it too; SIGTERM stops it cleanly.
#[test]
fn kv_async_example() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let child = Command::new(example("kv_async"))
        .arg("--socket")
        .arg(&b.socket)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn kv_async serve");
    let mut server = ProcessGuard::new("kv_async", child);
    let probe = b.connect("probe");
    assert!(wait_until(Duration::from_secs(20), || probe
        .list()
        .is_ok_and(|l| l.iter().any(|f| f == "kv.incr"))));
    let target = b.udp.to_string();
    let run = |program: &str, args: &[&str]| {
        let out = Command::new(example(program))
            .arg("--socket")
            .arg(&a.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run example");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = run("kv_async", &["call", &target]);
    assert!(ok, "{text}");
    assert!(text.contains("incr demo.counter -> 1, then 2"), "{text}");
    assert!(text.contains("not an integer"), "{text}");
    assert_eq!(
        run("kv_async", &["call", &target, "incr", "hits"]),
        (true, "1\n".into())
    );
    assert_eq!(
        run("kv_client", &[&target, "incr", "hits"]),
        (true, "2\n".into())
    );
    let (ok, text) = run("kv_async", &["fan", &target, "32"]);
    assert!(ok, "{text}");
    assert_eq!(text, "fan: 32 tasks ok\n");
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let status = server.wait_timeout(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
