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
    let sections: Vec<&str> = f.keys().map(String::as_str).collect();
    assert_eq!(
        sections,
        [
            "access",
            "daemon",
            "dns",
            "limits",
            "metrics",
            "names",
            "security",
            "transport"
        ],
        "a section is missing from etc/rpcd.toml"
    );
    let keys = |section: &str| f[section].as_table().map_or(0, toml::Table::len);
    // Every key but the commented-out ones: daemon.socket (its default
    // depends on the user) and security.private_key_file (no default: none
    // means plaintext). [names] is empty by default and shown commented out,
    // and so is a [peers.NAME] table (peers have no defaults).
    let counts = [
        "daemon",
        "limits",
        "transport",
        "names",
        "dns",
        "security",
        "access",
        "metrics",
    ]
    .map(keys);
    assert_eq!(
        counts,
        [5, 21, 33, 0, 4, 0, 0, 4],
        "a key is missing from etc/rpcd.toml"
    );
    for example in [
        "# private_key_file = ",
        "# [peers.east]",
        "# public_key = ",
        "# socket_group = ",
        "# [[access.allow]]",
        "# listen = \"127.0.0.1:9474\"",
    ] {
        assert!(text.contains(example), "etc/rpcd.toml lacks {example:?}");
    }
}

/// `[metrics]`: listen off by default, "" turns it off, values out of range name their key.
#[test]
fn metrics_settings() {
    let mut s = Settings::default();
    assert_eq!(s.metrics.listen, None);
    s.apply_toml("[metrics]\nlisten = \"127.0.0.1:9474\"\nlatency_window = 10\n")
        .unwrap();
    assert_eq!(s.metrics.listen, Some("127.0.0.1:9474".parse().unwrap()));
    assert_eq!(s.metrics.latency_window, 10);
    s.apply_env([("RPCD_METRICS__LISTEN".to_owned(), String::new())])
        .unwrap();
    assert_eq!(s.metrics.listen, None, "an empty override turns it off");
    let e = s
        .apply_toml("[metrics]\nlisten = \"localhost\"\n")
        .unwrap_err();
    assert!(e.contains("metrics.listen"), "{e}");
    for (toml, key) in [
        ("latency_window = 0", "metrics.latency_window"),
        ("latency_window = 65537", "metrics.latency_window"),
        ("latency_window_ms = 0", "metrics.latency_window_ms"),
        ("functions_max = 0", "metrics.functions_max"),
        ("request_timeout_ms = 0", "metrics.request_timeout_ms"),
        ("request_timeout_ms = 60001", "metrics.request_timeout_ms"),
    ] {
        let mut s = Settings::default();
        s.apply_toml(&format!("[metrics]\n{toml}\n")).unwrap();
        let e = s.validate("x").unwrap_err().to_string();
        assert!(e.contains(key), "{toml}: {e}");
    }
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

#[test]
fn the_buffer_pool_is_read_from_the_file_and_is_none_or_holds_a_buffer() {
    let mut s = Settings::default();
    assert_eq!(s.limits.local_buffer_pool_max, 64 * 1024 * 1024);
    s.apply_toml("[limits]\nlocal_buffer_pool_max = 0\n")
        .unwrap();
    assert_eq!(s.limits.local_buffer_pool_max, 0);
    s.validate("x").expect("0 keeps no buffer: valid");
    s.apply_toml("[limits]\nlocal_buffer_pool_max = 1048576\n")
        .unwrap();
    s.validate("x").expect("one buffer of 1 MiB: valid");
    // Larger than the connections' budget is fine: the pool holds buffers not in use.
    let mut s = Settings::default();
    s.apply_toml("[limits]\nlocal_buffer_total_max = 16842752\n")
        .unwrap();
    s.validate("x")
        .expect("64 MiB kept, 16 MiB buffered: valid");
    for small in [1, 64, 1_048_575] {
        s.limits.local_buffer_pool_max = small;
        let e = s.validate("x").unwrap_err().to_string();
        assert!(e.contains("limits.local_buffer_pool_max"), "{small}: {e}");
    }
}

mod keys {
    use std::os::unix::fs::PermissionsExt;

    use rpcd_transport::secure::{PrivateKey, PublicKey, Security};

    use super::*;

    fn key(n: u8) -> PrivateKey {
        PrivateKey::from_bytes([n; 32])
    }

    /// A key file holding `text`, with permission bits `mode`.
    fn key_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn load(config: &str, env: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rpcd.toml");
        std::fs::write(&p, config).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load(Some(&p), env).map(|(s, _)| s)
    }

    fn with_key_file(path: &Path) -> String {
        format!(
            "[security]\nprivate_key_file = {:?}\n",
            path.display().to_string()
        )
    }

    #[test]
    fn a_private_key_file_turns_keys_on() {
        let dir = tempfile::tempdir().unwrap();
        let p = key_file(dir.path(), "k", &format!("{}\n", key(1).to_base64()), 0o600);
        let s = load(&with_key_file(&p), &[]).unwrap();
        let loaded = s.security.key.as_ref().unwrap();
        assert_eq!(loaded.key, key(1));
        assert_eq!(loaded.path, p);
        assert_eq!(
            s.transport_security(),
            Security::Keys {
                local: key(1),
                peers: Vec::new()
            }
        );
        // Read-only for the owner (as systemd leaves a credential) is fine too.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(load(&with_key_file(&p), &[]).is_ok());
        assert_eq!(
            load("", &[]).unwrap().transport_security(),
            Security::Plaintext
        );
    }

    #[test]
    fn an_unusable_key_file_is_refused_naming_path_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let good = key(1).to_base64();
        for (mode, shown) in [
            (0o644, "0644"),
            (0o640, "0640"),
            (0o604, "0604"),
            (0o620, "0620"),
        ] {
            let p = key_file(dir.path(), "exposed", &good, mode);
            let e = load(&with_key_file(&p), &[]).unwrap_err().to_string();
            assert!(e.contains("security.private_key_file"), "{e}");
            assert!(e.contains(&p.display().to_string()), "{e}");
            assert!(e.contains(shown), "{e}");
        }
        let missing = dir.path().join("missing");
        let e = load(&with_key_file(&missing), &[]).unwrap_err().to_string();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        assert!(e.contains("cannot open"), "{e}");
        let bad = key_file(dir.path(), "bad", "not a key\n", 0o600);
        let e = load(&with_key_file(&bad), &[]).unwrap_err().to_string();
        assert!(e.contains(&bad.display().to_string()), "{e}");
        assert!(e.contains("not base64"), "{e}");
        let short = key_file(dir.path(), "short", "AAAA", 0o600);
        let e = load(&with_key_file(&short), &[]).unwrap_err().to_string();
        assert!(e.contains("decodes to 3"), "{e}");
        let big = key_file(dir.path(), "big", &"A".repeat(4096), 0o600);
        let e = load(&with_key_file(&big), &[]).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
        let e = load("[security]\nprivate_key_file = \"rel/key\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("absolute"), "{e}");
        let e = load(&with_key_file(dir.path()), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    /// systemd's `LoadCredential=rpcd.key:...` is used when the file names
    /// no key; a named key wins.
    #[test]
    fn the_systemd_credential_is_the_fallback() {
        let creds = tempfile::tempdir().unwrap();
        let env = [("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())];
        assert!(
            load("", &env).unwrap().security.key.is_none(),
            "no credential"
        );
        key_file(creds.path(), "rpcd.key", &key(2).to_base64(), 0o400);
        let s = load("", &env).unwrap();
        assert_eq!(s.security.key.unwrap().key, key(2));
        let other = tempfile::tempdir().unwrap();
        let p = key_file(other.path(), "k", &key(3).to_base64(), 0o600);
        let s = load(&with_key_file(&p), &env).unwrap();
        assert_eq!(s.security.key.unwrap().key, key(3));
        key_file(creds.path(), "rpcd.key", &key(2).to_base64(), 0o644);
        let e = load("", &env).unwrap_err().to_string();
        assert!(
            e.contains("credential rpcd.key") && e.contains("0644"),
            "{e}"
        );
    }

    #[test]
    fn beyond_loopback_a_key_or_plaintext_consent() {
        let dir = tempfile::tempdir().unwrap();
        let p = key_file(dir.path(), "k", &key(1).to_base64(), 0o600);
        let wide = "[daemon]\nlisten = \"0.0.0.0:7400\"\n";
        let e = load(wide, &[]).unwrap_err().to_string();
        assert!(e.contains("daemon.plaintext"), "{e}");
        assert!(
            e.contains("set security.private_key_file (see `rpcctl keys generate`), or daemon.plaintext = true to accept unauthenticated peers"),
            "{e}"
        );
        assert!(load(&format!("{wide}{}", with_key_file(&p)), &[]).is_ok());
    }

    #[test]
    fn peers_parse_with_their_key_and_addresses() {
        let config = format!(
            "[peers.east]\npublic_key = \"{}\"\naddresses = [\"10.0.0.2:7400\", \"[fd00::2]:7400\"]\n\
             [peers.roaming]\npublic_key = \"{}\"\n\
             [peers.one]\npublic_key = \"{}\"\naddresses = \"10.0.0.3:7400\"\n",
            key(1).public(),
            key(2).public(),
            key(3).public()
        );
        let mut s = Settings::default();
        s.apply_toml(&config).unwrap();
        s.validate("t").unwrap();
        assert_eq!(s.peers["east"].public_key, key(1).public());
        assert_eq!(
            s.peers["east"].addresses,
            vec![
                "10.0.0.2:7400".parse::<SocketAddr>().unwrap(),
                "[fd00::2]:7400".parse().unwrap()
            ]
        );
        assert!(s.peers["roaming"].addresses.is_empty());
        assert_eq!(s.peers["one"].addresses.len(), 1);
        let keys = s.peer_keys();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys[0].name, "east");
    }

    #[test]
    fn a_bad_peer_is_an_error_naming_its_key() {
        let good = key(1).public().to_string();
        let cases = [
            (
                "[peers.x]\npublic_key = \"not a key\"\n".to_owned(),
                "line 2: `peers.x.public_key`",
            ),
            (
                format!(
                    "[peers.x]\npublic_key = \"{good}\"\naddresses = [\"host.example:7400\"]\n"
                ),
                "line 3: `peers.x.addresses`",
            ),
            (
                "[peers.x]\naddresses = [\"10.0.0.1:1\"]\n".to_owned(),
                "`peers.x.public_key`: missing",
            ),
            (
                format!("[peers.x]\npublic_key = \"{good}\"\nport = 1\n"),
                "port",
            ),
        ];
        for (text, want) in cases {
            let e = Settings::default().apply_toml(&text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        let many: Vec<String> = (0..=PEER_ADDRESSES_MAX)
            .map(|i| format!("\"10.0.0.1:{}\"", i + 1))
            .collect();
        let text = format!(
            "[peers.x]\npublic_key = \"{good}\"\naddresses = [{}]\n",
            many.join(",")
        );
        let e = Settings::default().apply_toml(&text).unwrap_err();
        assert!(
            e.contains("peers.x.addresses") && e.contains("at most 16"),
            "{e}"
        );
    }

    fn peer(public_key: PublicKey, addresses: &[&str]) -> PeerSettings {
        PeerSettings {
            public_key,
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn invalid_key(s: &Settings) -> String {
        match s.validate("t") {
            Err(SettingsError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid setting, got {other:?}"),
        }
    }

    #[test]
    fn peers_are_validated_against_each_other_and_our_key() {
        let mut s = Settings::default();
        s.peers.insert("local".into(), peer(key(1).public(), &[]));
        assert_eq!(invalid_key(&s), "peers.local");
        let mut s = Settings::default();
        s.peers.insert("a:b".into(), peer(key(1).public(), &[]));
        assert_eq!(invalid_key(&s), "peers.a:b");
        let mut s = Settings::default();
        s.peers.insert("a".into(), peer(key(1).public(), &[]));
        s.peers.insert("b".into(), peer(key(1).public(), &[]));
        assert_eq!(invalid_key(&s), "peers.b.public_key");
        let mut s = Settings::default();
        s.peers.insert("me".into(), peer(key(1).public(), &[]));
        s.validate("t").unwrap();
        s.security.key = Some(LoadedKey {
            key: key(1),
            path: "/k".into(),
        });
        assert_eq!(invalid_key(&s), "peers.me.public_key");
        let mut s = Settings::default();
        let addrs: Vec<String> = (0..=PEER_ADDRESSES_MAX)
            .map(|i| format!("10.0.0.1:{}", i + 1))
            .collect();
        let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        s.peers.insert("x".into(), peer(key(1).public(), &addrs));
        assert_eq!(invalid_key(&s), "peers.x.addresses");
    }

    /// `PEERS_CONFIGURED_MAX` peers are fine; one more is refused.
    #[test]
    fn configured_peers_are_bounded() {
        let mut s = Settings::default();
        for i in 0..PEERS_CONFIGURED_MAX {
            let mut k = [1u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_le_bytes());
            s.peers.insert(format!("p{i}"), peer(PublicKey(k), &[]));
        }
        s.validate("t").unwrap();
        s.peers
            .insert("one-more".into(), peer(PublicKey([2; 32]), &[]));
        assert_eq!(invalid_key(&s), "peers");
    }

    /// A target name means one thing: a service or a peer. A service may
    /// list a peer (by name) that has addresses.
    #[test]
    fn names_and_peers_do_not_collide_and_names_may_list_peers() {
        let mut s = Settings::default();
        s.peers
            .insert("east".into(), peer(key(1).public(), &["10.0.0.2:7400"]));
        s.peers.insert("roaming".into(), peer(key(2).public(), &[]));
        s.names
            .insert("kv".into(), vec!["east".into(), "10.0.0.3:7400".into()]);
        s.validate("t").unwrap();
        s.names.insert("east".into(), vec!["10.0.0.3:7400".into()]);
        assert_eq!(invalid_key(&s), "names.east");
        s.names.remove("east");
        s.names.insert("lost".into(), vec!["roaming".into()]);
        let e = s.validate("t").unwrap_err().to_string();
        assert!(
            e.contains("names.lost") && e.contains("peer roaming has no addresses configured"),
            "{e}"
        );
        s.names.remove("lost");
        s.names.insert("typo".into(), vec!["eats".into()]);
        assert_eq!(invalid_key(&s), "names.typo");
    }

    #[test]
    fn environment_overrides_security_and_one_key_of_a_peer() {
        let dir = tempfile::tempdir().unwrap();
        let p = key_file(dir.path(), "k", &key(1).to_base64(), 0o600);
        let config = format!(
            "[peers.east]\npublic_key = \"{}\"\naddresses = [\"10.0.0.2:7400\"]\n",
            key(2).public()
        );
        let s = load(
            &config,
            &[
                ("RPCD_SECURITY__PRIVATE_KEY_FILE", p.to_str().unwrap()),
                ("RPCD_PEERS__EAST__ADDRESSES", "10.0.0.9:7400"),
            ],
        )
        .unwrap();
        assert_eq!(s.security.key.unwrap().key, key(1));
        assert_eq!(s.peers["east"].public_key, key(2).public());
        assert_eq!(
            s.peers["east"].addresses,
            vec!["10.0.0.9:7400".parse::<SocketAddr>().unwrap()]
        );
        let e = load("", &[("RPCD_PEERS__WEST__PUBLIC_KEY", "nope")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("environment override"), "{e}");
        assert!(
            e.contains("peers.west.public_key") && e.contains("32 bytes"),
            "{e}"
        );
    }
}

/// `daemon.log_format` from the file and the environment; a bad value or
/// log filter names its key.
#[test]
fn log_format_and_level_are_read_and_checked() {
    let mut s = Settings::default();
    assert_eq!(s.log_format, LogFormat::Auto);
    s.apply_toml("[daemon]\nlog_format = \"json\"\n").unwrap();
    assert_eq!(s.log_format, LogFormat::Json);
    let env = [("RPCD_DAEMON__LOG_FORMAT".to_owned(), "journald".to_owned())];
    assert!(s.apply_env(env).unwrap());
    assert_eq!(s.log_format, LogFormat::Journald);
    let e = s
        .apply_toml("[daemon]\nlog_format = \"xml\"\n")
        .unwrap_err();
    assert!(e.contains("`daemon.log_format`"), "{e}");
    s.log_level = "rpcd=loud".into();
    let e = s.validate("x").unwrap_err().to_string();
    assert!(e.contains("daemon.log_level"), "{e}");
    s.log_level = "warn,rpcd::router=debug".into();
    s.validate("x").unwrap();
}

/// `daemon.busy_poll_us`: on by default, read from the file and the environment, 0 turns it
/// off, and a value over the bound is refused naming the key.
#[test]
fn busy_polling_is_read_bounded_and_may_be_off() {
    let mut s = Settings::default();
    assert_eq!(s.busy_poll, BUSY_POLL_DEFAULT);
    assert!(!BUSY_POLL_DEFAULT.is_zero());
    s.apply_toml("[daemon]\nbusy_poll_us = 0\n").unwrap();
    assert_eq!(s.busy_poll, Duration::ZERO);
    s.validate("x").unwrap();
    let env = [("RPCD_DAEMON__BUSY_POLL_US".to_owned(), "250".to_owned())];
    assert!(s.apply_env(env).unwrap());
    assert_eq!(s.busy_poll, Duration::from_micros(250));
    s.apply_toml("[daemon]\nbusy_poll_us = 10000\n").unwrap();
    s.validate("x").unwrap();
    s.apply_toml("[daemon]\nbusy_poll_us = 10001\n").unwrap();
    let e = s.validate("x").unwrap_err().to_string();
    assert!(
        e.contains("daemon.busy_poll_us") && e.contains("10000"),
        "{e}"
    );
    let e = s.apply_toml("[daemon]\nbusy_poll_us = -1\n").unwrap_err();
    assert!(e.contains("busy_poll_us"), "{e}");
}
