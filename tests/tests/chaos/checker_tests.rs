//! The checker and the schedule on their own (no network, no root): a clean history
//! passes, and each property's violation is reported with the history around it.

use std::time::Duration;

use super::checker::{check, report, Bounds, Call, Fault, History};
use super::schedule::{schedule, Kind};

const MS: Duration = Duration::from_millis(1);

fn bounds() -> Bounds {
    Bounds {
        overrun: 1500 * MS,
        liveness: 10_000 * MS,
    }
}

fn call(nonce: u64, from: usize, to: usize, start_ms: u32, outcome: &str) -> Call {
    let ok = outcome == "ok";
    Call {
        nonce,
        from,
        to,
        start: MS * start_ms,
        took: 20 * MS,
        deadline: 1000 * MS,
        outcome: outcome.into(),
        value: ok.then_some(nonce),
        unknown: matches!(
            outcome,
            "peer_restarted" | "disconnected" | "deadline_exceeded"
        ),
        local: false,
        liveness: false,
    }
}

/// A clean history: calls of every kind of outcome, a fault, a heal, every pair live.
fn clean() -> History {
    let mut h = History {
        seed: 7,
        hosts: 3,
        healed_at: Some(MS * 5000),
        ..History::default()
    };
    h.calls.push(call(1, 0, 1, 100, "ok"));
    h.calls.push(call(2, 0, 2, 200, "peer_restarted"));
    h.calls.push(call(3, 1, 2, 300, "deadline_exceeded"));
    h.calls.push(call(4, 2, 0, 400, "unknown_function"));
    h.faults.push(Fault {
        at: MS * 150,
        what: "SIGKILL rpcd c".into(),
    });
    h.executions.insert(1, vec![1]);
    h.executions.insert(3, vec![2]);
    let mut n = 100;
    for from in 0..3 {
        for to in (0..3).filter(|&to| to != from) {
            let mut c = call(n, from, to, 5010, "ok");
            c.liveness = true;
            h.executions.insert(n, vec![to]);
            h.calls.push(c);
            n += 1;
        }
    }
    h
}

fn violations(h: &History) -> Vec<String> {
    match check(h, &bounds()) {
        Ok(_) => Vec::new(),
        Err(v) => v.into_iter().map(|v| v.what).collect(),
    }
}

#[test]
fn checker_accepts_a_clean_history() {
    let summary = check(&clean(), &bounds()).unwrap();
    assert!(summary.contains("1 of 2 outcome-unknown ran"), "{summary}");
}

#[test]
fn checker_catches_a_double_execution() {
    // An ok call run twice, and an outcome-unknown call run twice.
    let mut h = clean();
    h.executions.insert(1, vec![1, 1]);
    h.executions.insert(2, vec![2, 2]);
    let v = violations(&h);
    assert!(
        v.iter().any(|w| w == "nonce 1 ran 2 times (on b,b)"),
        "{v:?}"
    );
    assert!(v.iter().any(|w| w == "ok call 1 ran 2 times"), "{v:?}");
    assert!(
        v.iter().any(|w| w == "nonce 2 ran 2 times (on c,c)"),
        "{v:?}"
    );
    // The report names the seed, the replay command and the history around nonce 1.
    let Err(all) = check(&h, &bounds()) else {
        panic!("no violation")
    };
    let text = report(&h, &all, "CHAOS_SEED=7 cargo test");
    assert!(text.contains("seed 7"), "{text}");
    assert!(text.contains("replay: CHAOS_SEED=7 cargo test"), "{text}");
    assert!(text.contains("FAULT SIGKILL rpcd c"), "{text}");
    assert!(text.contains("call 1 a->b"), "{text}");
}

#[test]
fn checker_catches_an_ok_that_never_ran_and_a_wrong_reply() {
    let mut h = clean();
    h.executions.remove(&1);
    h.calls[0].value = Some(99);
    let v = violations(&h);
    assert!(v.iter().any(|w| w == "ok call 1 ran 0 times"), "{v:?}");
    assert!(
        v.iter().any(|w| w == "ok call 1 got reply Some(99)"),
        "{v:?}"
    );
}

#[test]
fn checker_catches_a_definite_failure_that_ran() {
    let mut h = clean();
    h.executions.insert(4, vec![0]);
    let v = violations(&h);
    assert!(
        v.iter()
            .any(|w| w == "call 4 ended unknown_function (definite) but ran 1 time(s)"),
        "{v:?}"
    );
}

#[test]
fn checker_catches_a_run_on_the_wrong_host_and_a_run_nobody_asked_for() {
    let mut h = clean();
    h.executions.insert(3, vec![0]);
    h.executions.insert(555, vec![1]);
    let v = violations(&h);
    assert!(v.iter().any(|w| w == "call 3 to c ran on a"), "{v:?}");
    assert!(
        v.iter()
            .any(|w| w == "nonce 555 ran on b but no call sent it"),
        "{v:?}"
    );
}

#[test]
fn checker_catches_a_call_past_its_deadline_bound() {
    let mut h = clean();
    // 1 ms over the bound fails; exactly on it passes.
    h.calls[2].took = h.calls[2].deadline + 1501 * MS;
    assert_eq!(violations(&h).len(), 1);
    h.calls[2].took = h.calls[2].deadline + 1500 * MS;
    assert!(violations(&h).is_empty());
}

#[test]
fn checker_catches_a_daemon_that_does_not_answer_after_the_heal() {
    // No ok from c to a: only a failure.
    let mut h = clean();
    for c in h
        .calls
        .iter_mut()
        .filter(|c| c.liveness && c.from == 2 && c.to == 0)
    {
        c.outcome = "peer_unreachable".into();
        c.value = None;
        c.unknown = true;
    }
    let v = violations(&h);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("c got no answer from a"), "{v:?}");
    // An ok that came too late fails too; and a run that never healed.
    let mut h = clean();
    h.calls.last_mut().unwrap().start = MS * 15_001;
    assert_eq!(violations(&h).len(), 1);
    let mut h = clean();
    h.healed_at = None;
    assert!(violations(&h).iter().any(|w| w == "the run never healed"));
    let mut h = clean();
    h.unexpected.push("rpcd b exited on its own".into());
    assert_eq!(violations(&h), ["rpcd b exited on its own"]);
}

#[test]
fn schedule_is_a_function_of_the_seed_and_deals_every_kind() {
    let length = Duration::from_secs(20);
    assert_eq!(schedule(42, length), schedule(42, length));
    assert_ne!(schedule(42, length), schedule(43, length));
    // 9985620408872423277: a CI run's seed whose first draw dealt no `Partition`.
    for seed in (0..2000).chain([9_985_620_408_872_423_277]) {
        let s = schedule(seed, length);
        let kinds: std::collections::BTreeSet<Kind> = s
            .iter()
            .flat_map(|e| &e.actions)
            .map(|a| a.kind())
            .collect();
        assert_eq!(kinds.len(), Kind::ALL.len(), "seed {seed}: {s:?}");
        for e in &s {
            assert!(e.start + e.hold <= length, "seed {seed}: {e:?}");
            let mut hosts: Vec<usize> = e.actions.iter().map(|a| a.host()).collect();
            hosts.dedup();
            assert_eq!(hosts.len(), e.actions.len(), "one fault per host: {e:?}");
        }
    }
}
