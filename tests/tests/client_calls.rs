//! The high-level client and the stub generator through real daemons: typed round trips,
//! every error code as its `CallError` variant, and many threads on one client.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::UdpSocket;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rpcd_client::{
    CallError, CallOptions, Client, ClientOptions, ErrorCode, Handler, Outcome, Server, Target,
};
use rpcd_tests::{tempdir, wait_until, Daemon};
use serde::{Deserialize, Serialize};
use serde_bytes::{ByteBuf, Bytes};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
    label: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Circle { r: f64 },
    Poly(Vec<Point>),
    Empty,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Nested {
    shapes: BTreeMap<String, Vec<Option<Shape>>>,
    tags: HashMap<u8, (bool, char)>,
    blob: ByteBuf,
    depth: Option<Box<Nested>>,
}

/// One function per kind of value; each answers something derived from its input, so a
/// reply cannot be mistaken for an echo of another call.
#[rpcd_client::service]
trait Types {
    fn scalars(&self, a: u8, b: i64, c: f64, d: bool, e: char) -> (u8, i64, f64, bool, char);
    fn string(&self, s: String) -> String;
    fn bytes(&self, b: ByteBuf, v: Vec<u8>) -> (ByteBuf, usize);
    fn point(&self, p: Point) -> Point;
    fn shape(&self, s: Shape) -> Shape;
    fn option(&self, o: Option<String>) -> Option<usize>;
    fn vec(&self, v: Vec<i32>) -> Vec<i32>;
    fn map(&self, m: HashMap<String, u64>) -> BTreeMap<String, u64>;
    fn nested(&self, n: Nested) -> Nested;
    fn nothing(&self);
    fn no_args(&self) -> String;
    fn fail(&self, message: String) -> Result<u32, String>;
    fn sleep(&self, ms: u64) -> u64;
    fn id(&self, caller: u32, seq: u32) -> (u32, u32);
    /// Arguments borrowed from the invocation's bytes.
    fn borrowed(&self, s: &str, b: &Bytes) -> (String, u64, u64);
}

struct TypesImpl;

impl Types for TypesImpl {
    fn scalars(&self, a: u8, b: i64, c: f64, d: bool, e: char) -> (u8, i64, f64, bool, char) {
        (a.wrapping_add(1), -b, c * 2.0, !d, e.to_ascii_uppercase())
    }
    fn string(&self, s: String) -> String {
        s.chars().rev().collect()
    }
    fn bytes(&self, b: ByteBuf, v: Vec<u8>) -> (ByteBuf, usize) {
        let mut out = b.into_vec();
        out.extend_from_slice(&v);
        let len = out.len();
        (ByteBuf::from(out), len)
    }
    fn point(&self, p: Point) -> Point {
        Point {
            x: p.y,
            y: p.x,
            label: p.label + "!",
        }
    }
    fn shape(&self, s: Shape) -> Shape {
        match s {
            Shape::Circle { r } => Shape::Circle { r: r + 1.0 },
            Shape::Poly(mut points) => {
                points.reverse();
                Shape::Poly(points)
            }
            Shape::Empty => Shape::Empty,
        }
    }
    fn option(&self, o: Option<String>) -> Option<usize> {
        o.map(|s| s.len())
    }
    fn vec(&self, v: Vec<i32>) -> Vec<i32> {
        v.into_iter().map(|x| x * 10).collect()
    }
    fn map(&self, m: HashMap<String, u64>) -> BTreeMap<String, u64> {
        m.into_iter()
            .map(|(k, v)| (k.to_uppercase(), v + 1))
            .collect()
    }
    fn nested(&self, n: Nested) -> Nested {
        n
    }
    fn nothing(&self) {}
    fn no_args(&self) -> String {
        "no args".into()
    }
    fn fail(&self, message: String) -> Result<u32, String> {
        if message.is_empty() {
            Ok(7)
        } else {
            Err(message)
        }
    }
    fn sleep(&self, ms: u64) -> u64 {
        thread::sleep(Duration::from_millis(ms));
        ms
    }
    fn id(&self, caller: u32, seq: u32) -> (u32, u32) {
        (caller, seq)
    }
    fn borrowed(&self, s: &str, b: &Bytes) -> (String, u64, u64) {
        let sum = b.iter().map(|&x| u64::from(x)).sum();
        (s.chars().rev().collect(), b.len() as u64, sum)
    }
}

fn deadline(ms: u64) -> CallOptions {
    CallOptions::new(Some(Duration::from_millis(ms)), false)
}

/// Two daemons; `TypesImpl` served on B through the stub generator, a client on A.
struct Setup {
    _dir: tempfile::TempDir,
    _a: Daemon,
    b: Daemon,
    client: Client,
    server: Server,
    stub: TypesClient,
}

fn setup(a_config: Option<&str>) -> Setup {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", a_config);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let server_client = Client::connect_to(&b.socket).expect("connect to b");
    let server = Server::new(&server_client).expect("server");
    TypesImpl.serve(&server).expect("serve");
    let client = Client::connect_to(&a.socket).expect("connect to a");
    let stub = TypesClient::new(&client, b.udp).with_options(deadline(10_000));
    Setup {
        _dir: dir,
        _a: a,
        b,
        client,
        server,
        stub,
    }
}

/// Every kind of serde value crosses two daemons through the generated stubs intact.
#[test]
fn typed_round_trips_through_generated_stubs() {
    let s = setup(None);
    let t = &s.stub;
    assert_eq!(
        TypesClient::FUNCTIONS,
        [
            "types.scalars",
            "types.string",
            "types.bytes",
            "types.point",
            "types.shape",
            "types.option",
            "types.vec",
            "types.map",
            "types.nested",
            "types.nothing",
            "types.no_args",
            "types.fail",
            "types.sleep",
            "types.id",
            "types.borrowed"
        ]
    );
    assert_eq!(
        t.scalars(254, i64::MIN + 1, 1.25, true, 'q').unwrap(),
        (255, i64::MAX, 2.5, false, 'Q')
    );
    assert_eq!(t.string("héllo wörld").unwrap(), "dlröw olléh");
    assert_eq!(t.string(String::new()).unwrap(), "");
    let (b, len) = t
        .bytes(ByteBuf::from(vec![0u8, 255, 1]), vec![9u8, 8])
        .unwrap();
    assert_eq!((b.into_vec(), len), (vec![0, 255, 1, 9, 8], 5));
    let p = Point {
        x: 1,
        y: -2,
        label: "p".into(),
    };
    assert_eq!(
        t.point(p.clone()).unwrap(),
        Point {
            x: -2,
            y: 1,
            label: "p!".into()
        }
    );
    assert_eq!(
        t.shape(Shape::Circle { r: 1.5 }).unwrap(),
        Shape::Circle { r: 2.5 }
    );
    let q = Point {
        x: 3,
        y: 4,
        label: "q".into(),
    };
    assert_eq!(
        t.shape(Shape::Poly(vec![p.clone(), q.clone()])).unwrap(),
        Shape::Poly(vec![q, p.clone()])
    );
    assert_eq!(t.shape(Shape::Empty).unwrap(), Shape::Empty);
    assert_eq!(t.option(Some("four".to_string())).unwrap(), Some(4));
    assert_eq!(t.option(None::<String>).unwrap(), None);
    assert_eq!(t.vec(vec![1, -2, 3]).unwrap(), vec![10, -20, 30]);
    assert_eq!(t.vec(Vec::<i32>::new()).unwrap(), Vec::<i32>::new());
    let m = HashMap::from([("a".to_string(), 1u64), ("b".to_string(), u64::MAX - 1)]);
    assert_eq!(
        t.map(m).unwrap(),
        BTreeMap::from([("A".to_string(), 2), ("B".to_string(), u64::MAX)])
    );
    let inner = Nested {
        shapes: BTreeMap::from([("x".into(), vec![None, Some(Shape::Empty)])]),
        tags: HashMap::new(),
        blob: ByteBuf::from(vec![1, 2, 3]),
        depth: None,
    };
    let n = Nested {
        shapes: BTreeMap::from([
            ("circles".into(), vec![Some(Shape::Circle { r: 0.5 }), None]),
            ("polys".into(), vec![Some(Shape::Poly(vec![p]))]),
        ]),
        tags: HashMap::from([(1, (true, 'a')), (200, (false, 'λ'))]),
        blob: ByteBuf::from((0..=255u8).collect::<Vec<_>>()),
        depth: Some(Box::new(inner)),
    };
    assert_eq!(t.nested(n.clone()).unwrap(), n);
    t.nothing().unwrap();
    assert_eq!(t.no_args().unwrap(), "no args");
    assert_eq!(t.fail("").unwrap(), 7);
    // Borrowed arguments, small and above the size whose bytes stay where the serving
    // app's reader read them; the owned and borrowed encodings are the same bytes.
    assert_eq!(
        t.borrowed("héllo", Bytes::new(&[1, 2, 250])).unwrap(),
        ("olléh".to_string(), 3, 253)
    );
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let sum = big.iter().map(|&x| u64::from(x)).sum();
    assert_eq!(
        t.borrowed("", Bytes::new(&big)).unwrap(),
        (String::new(), big.len() as u64, sum)
    );
    let owned: (String, u64, u64) = s
        .client
        .call(s.b.udp, "types.borrowed", &("ab", ByteBuf::from(vec![5u8])))
        .unwrap();
    assert_eq!(owned, ("ba".to_string(), 1, 5));

    // The untyped API speaks the same encoding: arguments are one array.
    let reversed: String = s.client.call(s.b.udp, "types.string", &("abc",)).unwrap();
    assert_eq!(reversed, "cba");
    let raw = s
        .client
        .call_raw(s.b.udp, "rpcd.echo", vec![1, 2, 3])
        .unwrap();
    assert_eq!(raw, [1, 2, 3]);
    // A target given as text, or as an address, is the same target.
    assert_eq!(Target::from(s.b.udp), Target::new(&s.b.udp.to_string()));
}

/// Each daemon error code reachable from a client surfaces as its own `CallError`
/// variant, and so do this side's encode/decode failures.
#[test]
fn every_error_code_is_its_own_variant() {
    let s = setup(Some(
        "[transport]\nmessage_max = 100000\npayload_max_loopback = 0\nreassembly_bytes_max = 200000\nsend_queue_bytes_max = 200000\n",
    ));
    let b = s.b.udp;

    let err = s.client.call::<_, ()>(b, "no.such", &()).unwrap_err();
    assert!(matches!(err, CallError::UnknownFunction(_)), "{err:?}");
    assert_eq!(err.code(), Some(ErrorCode::UnknownFunction));
    assert!(!err.outcome_unknown());

    let err = s
        .client
        .call::<_, ()>("not a target", "rpcd.ping", &())
        .unwrap_err();
    assert!(matches!(err, CallError::BadRequest(_)), "{err:?}");

    // Arguments the handler cannot decode are refused by the serving app.
    let err = s
        .client
        .call_raw(b, "types.string", vec![0xc1])
        .unwrap_err();
    assert!(matches!(err, CallError::BadRequest(_)), "{err:?}");
    let err = s
        .client
        .call::<_, String>(b, "types.string", &(1, 2))
        .unwrap_err();
    assert!(matches!(err, CallError::BadRequest(_)), "{err:?}");

    let err = s
        .stub
        .string("x".repeat(150_000))
        .expect_err("over message_max");
    assert!(matches!(err, CallError::MessageTooLarge(_)), "{err:?}");

    let err = s.stub.fail("no such key").unwrap_err();
    assert_eq!(err, CallError::App("no such key".into()));
    assert_eq!(err.code(), Some(ErrorCode::AppError));

    let err = s
        .stub
        .clone()
        .with_options(deadline(200))
        .sleep(2_000u64)
        .unwrap_err();
    assert!(matches!(err, CallError::DeadlineExceeded(_)), "{err:?}");
    assert!(err.outcome_unknown());

    // Decode: the reply is a string, the caller expects a number.
    let err = s
        .client
        .call::<_, u64>(b, "types.string", &("abc",))
        .unwrap_err();
    assert!(matches!(err, CallError::Decode(_)), "{err:?}");

    // Encode: a value whose Serialize fails.
    struct Unencodable;
    impl Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refuses to serialize"))
        }
    }
    let err = s
        .client
        .call::<_, ()>(b, "types.string", &Unencodable)
        .unwrap_err();
    assert!(matches!(err, CallError::Encode(_)), "{err:?}");

    // Name taken: another app on B registering a served name.
    let other = Client::connect_to(&s.b.socket).unwrap();
    let thief = Server::new(&other).unwrap();
    let err = thief
        .register("types.string", Handler::new(|_| Outcome::Ok(vec![])))
        .unwrap_err();
    assert!(matches!(err, CallError::NameTaken(_)), "{err:?}");
    assert!(
        thief.functions().is_empty(),
        "a refused name stays unserved"
    );
    // Not owner: releasing a name this app does not serve.
    let err = thief.unregister("types.string").unwrap_err();
    assert!(matches!(err, CallError::NotOwner(_)), "{err:?}");
    // The owner still serves it.
    assert_eq!(s.stub.string("ab").unwrap(), "ba");
    drop(s.server);
}

/// The serving app disconnects while a call waits: `ServerAppGone`.
#[test]
fn server_app_gone_is_its_own_variant() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let serving = a.connect("serving");
    serving.register("test.vanish").unwrap();
    let client = Client::connect_to(&a.socket).unwrap();
    let me = client.daemon().listen;
    let call = thread::spawn(move || {
        client.call_with::<_, ()>(me.as_str(), "test.vanish", &(), deadline(10_000))
    });
    let inv = serving.next_invocation(Some(Duration::from_secs(10)));
    assert!(inv.is_some(), "the call never arrived");
    drop(serving);
    let err = call.join().unwrap().unwrap_err();
    assert!(matches!(err, CallError::ServerAppGone(_)), "{err:?}");
}

/// A peer daemon that does not exist: `PeerUnreachable` within the configured bound.
#[test]
fn peer_unreachable_is_its_own_variant() {
    let dir = tempdir();
    let a = Daemon::start(
        dir.path(),
        "a",
        "127.0.0.1:0",
        Some("[transport]\nkeepalive_interval_ms = 100\npeer_timeout_ms = 500\nretransmits_max = 4\n"),
    );
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = silent.local_addr().unwrap();
    let client = Client::connect_to(&a.socket).unwrap();
    let err = client
        .call_with::<_, String>(target, "rpcd.ping", &(), deadline(30_000))
        .unwrap_err();
    assert!(matches!(err, CallError::PeerUnreachable(_)), "{err:?}");
}

/// The serving daemon restarts under a call: `PeerRestarted` (outcome unknown).
#[test]
fn peer_restarted_is_its_own_variant() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let mut b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let serving = b.connect("serving");
    serving.register("test.hang").unwrap();
    let client = Client::connect_to(&a.socket).unwrap();
    let target = b.udp;
    let call = {
        let client = client.clone();
        thread::spawn(move || client.call_with::<_, ()>(target, "test.hang", &(), deadline(20_000)))
    };
    assert!(serving
        .next_invocation(Some(Duration::from_secs(10)))
        .is_some());
    b.restart_after_kill(dir.path(), "b");
    let err = call.join().unwrap().unwrap_err();
    assert!(matches!(err, CallError::PeerRestarted(_)), "{err:?}");
    assert!(err.outcome_unknown());
    // New calls to the new incarnation succeed.
    client
        .call_with::<_, String>(target, "rpcd.ping", &(), deadline(10_000))
        .unwrap();
}

/// A daemon shutting down (SIGTERM, a call still pending) refuses new calls with
/// `ShuttingDown`.
#[test]
fn shutting_down_is_its_own_variant() {
    let dir = tempdir();
    let a = Daemon::start(
        dir.path(),
        "a",
        "127.0.0.1:0",
        Some("[limits]\nshutdown_grace_ms = 5000\n"),
    );
    let serving = a.connect("serving");
    serving.register("test.hang").unwrap();
    let client = Client::connect_to(&a.socket).unwrap();
    let me = client.daemon().listen;
    let pending = {
        let (client, me) = (client.clone(), me.clone());
        thread::spawn(move || {
            client.call_with::<_, ()>(me.as_str(), "test.hang", &(), deadline(20_000))
        })
    };
    assert!(serving
        .next_invocation(Some(Duration::from_secs(10)))
        .is_some());
    a.process.signal(nix::sys::signal::Signal::SIGTERM);
    let mut last = None;
    assert!(wait_until(Duration::from_secs(4), || {
        match client.call_with::<_, String>(me.as_str(), "rpcd.ping", &(), deadline(1_000)) {
            Ok(_) => false,
            Err(err) => {
                last = Some(err);
                true
            }
        }
    }));
    let err = last.expect("an error");
    assert!(matches!(err, CallError::ShuttingDown(_)), "{err:?}");
    assert!(pending.join().unwrap().is_err());
}

/// 16 threads × 1,000 calls on one shared client: every reply is the one for its call.
#[test]
fn sixteen_threads_share_one_client() {
    const THREADS: u32 = 16;
    const CALLS: u32 = 1_000;
    let s = setup(None);
    let seen = Arc::new(std::sync::Mutex::new(HashSet::new()));
    thread::scope(|scope| {
        for caller in 0..THREADS {
            let stub = s.stub.clone();
            let seen = Arc::clone(&seen);
            scope.spawn(move || {
                for seq in 0..CALLS {
                    let reply = stub.id(caller, seq).expect("call");
                    assert_eq!(reply, (caller, seq), "reply for another call");
                    assert!(seen.lock().unwrap().insert(reply), "duplicate reply");
                }
            });
        }
    });
    assert_eq!(seen.lock().unwrap().len(), (THREADS * CALLS) as usize);
    assert_eq!(s.client.generation(), 1, "no reconnect happened");
    assert!(s.server.stats().completed >= u64::from(THREADS * CALLS));
}

/// No daemon at the socket: connecting says where it looked, and a client whose daemon
/// vanished gives up after its bounded reconnect attempts with `DaemonUnavailable`.
#[test]
fn daemon_unavailable_is_reported_clearly() {
    let dir = tempdir();
    let missing = dir.path().join("missing.sock");
    let err = Client::connect_to(&missing).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("is rpcd running? tried {}", missing.display())),
        "{err}"
    );

    let mut a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let client = Client::connect_with(&a.socket, {
        let mut o = ClientOptions::default();
        o.reconnect_attempts_max = 3;
        o.reconnect_backoff_initial = Duration::from_millis(5);
        o
    })
    .unwrap();
    client.ping().unwrap();
    a.process.kill();
    assert!(wait_until(Duration::from_secs(10), || !client.is_connected()));
    let err = client.ping().unwrap_err();
    assert!(
        matches!(err, CallError::DaemonUnavailable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("is rpcd running?"), "{err}");
    assert!(err.is_transient());
}
