use super::*;

#[test]
fn defaults_validate() {
    Settings::default().validate("defaults").unwrap();
}

/// No peer authentication yet: beyond loopback only with explicit consent.
#[test]
fn listening_beyond_loopback_needs_plaintext_consent() {
    for listen in [
        "127.0.0.1:1",
        "127.3.0.1:1",
        "[::1]:1",
        "[::ffff:127.0.0.1]:1",
    ] {
        let s = Settings {
            listen: listen.parse().unwrap(),
            ..Settings::default()
        };
        assert!(s.validate("x").is_ok(), "{listen}");
    }
    for listen in ["0.0.0.0:1", "10.0.0.1:1", "[::]:1", "[2001:db8::1]:1"] {
        let mut s = Settings {
            listen: listen.parse().unwrap(),
            ..Settings::default()
        };
        let e = s.validate("x").unwrap_err().to_string();
        assert!(e.contains("daemon.plaintext"), "{listen}: {e}");
        s.plaintext = true;
        assert!(s.validate("x").is_ok(), "{listen} with consent");
    }
    let mut s = Settings::default();
    s.apply_toml("[daemon]\nlisten = \"0.0.0.0:9\"\nplaintext = true\n")
        .unwrap();
    assert!(s.validate("x").is_ok());
}

#[test]
fn file_overrides_and_unknown_key_names_line() {
    let mut s = Settings::default();
    s.apply_toml("[daemon]\nlisten = \"127.0.0.1:9\"\n[transport]\nrto_min_ms = 7\n")
        .unwrap();
    assert_eq!(s.listen.port(), 9);
    assert_eq!(s.transport.rto_min, Duration::from_millis(7));
    let err = s
        .apply_toml("[limits]\n\nconections_max = 3\n")
        .unwrap_err();
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("conections_max"), "{err}");
    let err = s.apply_toml("[daemon]\nlisten = 5\n").unwrap_err();
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("`daemon.listen`"), "{err}");
    let err = s
        .apply_toml("[transport]\n\nrto_min_ms = \"fast\"\n")
        .unwrap_err();
    assert!(err.contains("line 3: `transport.rto_min_ms`"), "{err}");
}

#[test]
fn host_port_and_name_syntax() {
    assert_eq!(split_host_port("a.b:9"), Ok(("a.b", 9)));
    assert_eq!(split_host_port("[::1]:5"), Ok(("::1", 5)));
    assert!(split_host_port("nope").is_err());
    assert!(split_host_port("h:99999").is_err());
    assert!(split_host_port(":5").is_err());
    assert!(valid_name("kv-east.v2"));
    assert!(!valid_name("a:b"));
    assert!(!valid_name(""));
}

#[test]
fn names_accept_one_or_many_and_are_validated() {
    let mut s = Settings::default();
    s.apply_toml("[names]\nkv = [\"10.0.0.2:7400\", \"host-b:7400\"]\necho = \"localhost:9\"\n")
        .unwrap();
    assert_eq!(s.names["kv"], vec!["10.0.0.2:7400", "host-b:7400"]);
    assert_eq!(s.names["echo"], vec!["localhost:9"]);
    s.validate("t").unwrap();
    s.names.insert("bad".into(), vec!["nope".into()]);
    let e = s.validate("t").unwrap_err().to_string();
    assert!(e.contains("names.bad"), "{e}");
    let mut s = Settings::default();
    s.names.insert("a:b".into(), vec!["h:1".into()]);
    assert!(s.validate("t").is_err());
}

#[test]
fn environment_overrides_file_and_names_the_key() {
    let mut s = Settings::default();
    s.apply_toml("[limits]\nconnections_max = 3\n").unwrap();
    let env = [
        ("RPCD_LIMITS__CONNECTIONS_MAX".to_owned(), "7".to_owned()),
        ("RPCD_SOCKET".to_owned(), "/elsewhere".to_owned()),
        ("RPCD_TRANSPORT__RTO_MIN_MS".to_owned(), "9".to_owned()),
    ];
    assert!(s.apply_env(env).unwrap());
    assert_eq!(s.limits.connections_max, 7);
    assert_eq!(s.transport.rto_min, Duration::from_millis(9));
    let bad = [("RPCD_LIMITS__CONECTIONS_MAX".to_owned(), "7".to_owned())];
    let e = s.apply_env(bad).unwrap_err().to_string();
    assert!(e.contains("conections_max"), "{e}");
    let bad = [("RPCD_LIMITS__CONNECTIONS_MAX".to_owned(), "lots".to_owned())];
    let e = s.apply_env(bad).unwrap_err().to_string();
    assert!(e.contains("connections_max") || e.contains("lots"), "{e}");
}

/// etc/rpcd.toml holds every key with its built-in default.
#[test]
fn example_file_is_the_defaults() {
    let text = include_str!("../../../etc/rpcd.toml");
    let mut s = Settings::default();
    s.apply_toml(text).unwrap();
    assert_eq!(s, Settings::default());
    let f: toml::Table = toml::from_str(text).unwrap();
    let keys: usize = f
        .values()
        .map(|v| v.as_table().map_or(0, toml::Table::len))
        .sum();
    // Every key but the commented-out socket path (its default depends
    // on the user); [names] is empty by default and shown commented out.
    assert_eq!(keys, 3 + 15 + 20, "a key is missing from etc/rpcd.toml");
}

#[test]
fn invalid_relation_names_key() {
    let mut s = Settings::default();
    s.limits.connection_output_max = 10;
    let e = s.validate("x").unwrap_err().to_string();
    assert!(e.contains("limits.connection_output_max"), "{e}");
    let mut s = Settings::default();
    s.transport.ack_delay = Duration::from_secs(1);
    let e = s.validate("x").unwrap_err().to_string();
    assert!(e.contains("transport.ack_delay"), "{e}");
}
