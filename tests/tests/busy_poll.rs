//! Busy polling (`daemon.busy_poll_us`): under steady calls the daemon's loop polls instead
//! of sleeping, so no message has to wake it; once input stops it sleeps again.
//!
//! Sleeps are counted by the kernel: the daemon's `voluntary_ctxt_switches`, summed over
//! its threads in `/proc/PID/task`. A thread that yields the CPU while polling is switched
//! out involuntarily (it stays runnable), which is not counted; one that sleeps in
//! `epoll_wait` is. Its CPU time comes from `/proc/PID/task/*/schedstat` (nanoseconds on a
//! CPU). Counts and bounds, not timings: a loaded machine can only make the sleeping
//! daemon sleep less (input already there when it looks), and the polling one's window is
//! long enough (5 ms) that a calling thread descheduled now and then does not matter.

use std::time::Duration;

use rpcd_client::{CallOptions, Client, Server, ServerOptions};
use rpcd_tests::{tempdir, voluntary_switches, Daemon};

/// Calls made per measurement.
const CALLS: u64 = 2_000;

/// Sums one field of every thread of process `pid`: `field(text of /proc/PID/task/T/file)`.
fn per_thread(pid: u32, file: &str, field: impl Fn(&str) -> Option<u64>) -> u64 {
    let mut sum = 0;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
    for task in tasks.flatten() {
        // A thread may end between the listing and the read: skip it.
        if let Ok(text) = std::fs::read_to_string(task.path().join(file)) {
            sum += field(&text).expect("the field in /proc");
        }
    }
    sum
}

/// The daemon's sleeps so far, all its threads.
fn sleeps(daemon: &Daemon) -> u64 {
    per_thread(daemon.process.pid(), "status", voluntary_switches)
}

/// The daemon's time on a CPU so far, all its threads.
fn cpu(daemon: &Daemon) -> Duration {
    Duration::from_nanos(per_thread(daemon.process.pid(), "schedstat", |s| {
        s.split_whitespace().next().and_then(|ns| ns.parse().ok())
    }))
}

/// A daemon with `config`, a serving app on it with `busy.double`, and a caller calling it
/// through the daemon: each call is a request frame, an `invoke` frame, a result frame and
/// a reply frame, one after another. Returns the daemon's sleeps per call over [`CALLS`]
/// calls and the daemon, still running.
fn sleeps_per_call(config: &str) -> (f64, Daemon, tempfile::TempDir) {
    let dir = tempdir();
    let daemon = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(config));
    let app = Client::connect_to(&daemon.socket).expect("connect the serving app");
    let server = Server::with_options(&app, ServerOptions::new(2, 8)).expect("server");
    server
        .register_fn("busy.double", |(n,): (u64,)| Ok::<_, String>(n * 2))
        .expect("register");
    let me = app.daemon().listen;
    let caller = Client::connect_to(&daemon.socket).expect("connect the caller");
    let options = CallOptions::new(Some(Duration::from_secs(10)), false);
    let call = |n: u64| {
        let doubled: u64 = caller
            .call_with(me.as_str(), "busy.double", &(n,), options)
            .expect("busy.double");
        assert_eq!(doubled, n * 2);
    };
    for n in 0..200 {
        call(n);
    }
    let before = sleeps(&daemon);
    for n in 0..CALLS {
        call(n);
    }
    let per_call = (sleeps(&daemon) - before) as f64 / CALLS as f64;
    server.stop();
    (per_call, daemon, dir)
}

/// With busy polling the daemon hardly ever sleeps while calls come one after another;
/// with it off (the control) it sleeps between the messages of every call.
#[test]
fn a_daemon_under_steady_calls_polls_instead_of_sleeping() {
    let (off, _d, _dir) = sleeps_per_call("[daemon]\nbusy_poll_us = 0\n");
    let (on, _d, _dir) = sleeps_per_call("[daemon]\nbusy_poll_us = 5000\n");
    eprintln!("daemon sleeps per call: busy polling off {off:.2}, on {on:.2}");
    assert!(
        off > 0.8,
        "with busy polling off the daemon slept {off:.2} times per call: the count does not \
         see its sleeps"
    );
    assert!(
        on < 0.3,
        "with busy polling on the daemon slept {on:.2} times per call (off: {off:.2}): it \
         sleeps between the messages of a steady exchange"
    );
}

/// Once calls stop, a polling daemon polls for its window at most and then sleeps: an idle
/// second costs it next to no CPU, and it is found asleep.
#[test]
fn an_idle_daemon_stops_polling() {
    let (_, daemon, _dir) = sleeps_per_call("[daemon]\nbusy_poll_us = 5000\n");
    // The last call's window (5 ms) and the server's goodbye are over well within this.
    std::thread::sleep(Duration::from_millis(100));
    let (cpu_before, sleeps_before) = (cpu(&daemon), sleeps(&daemon));
    std::thread::sleep(Duration::from_secs(1));
    let idle_cpu = cpu(&daemon) - cpu_before;
    let idle_sleeps = sleeps(&daemon) - sleeps_before;
    eprintln!("an idle second: {idle_cpu:?} of CPU, {idle_sleeps} sleeps");
    assert!(
        idle_cpu < Duration::from_millis(20),
        "an idle daemon with busy polling used {idle_cpu:?} of CPU in a second: it keeps \
         polling without input"
    );
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", daemon.process.pid()))
        .expect("/proc/PID/stat");
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    assert_eq!(state, Some("S"), "the idle daemon is not asleep: {stat}");
}
