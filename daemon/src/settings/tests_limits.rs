//! `[limits]` keys that bound the transport's memory.

use super::*;

/// `limits.udp_spare_buffers_max`: the transport's default, 0 keeps none, past 256 MiB an
/// error naming the key; from the file or the environment.
#[test]
fn the_udp_spare_buffers_bound_is_read_and_at_most_256_mib() {
    let mut s = Settings::default();
    let both = |s: &Settings| {
        (
            s.limits.udp_spare_buffers_max,
            s.transport.transmit_spare_bytes_max,
        )
    };
    assert_eq!(both(&s), (4 << 20, 4 << 20));
    for (value, valid) in [
        (65536, true),
        (0, true),
        (1 << 28, true),
        ((1 << 28) + 1, false),
    ] {
        s.apply_toml(&format!("[limits]\nudp_spare_buffers_max = {value}\n"))
            .unwrap();
        assert_eq!(s.limits.udp_spare_buffers_max, value);
        let e = s.validate("x").err().map(|e| e.to_string());
        assert_eq!(e.is_none(), valid, "{value}: {e:?}");
    }
    let e = s.validate("x").unwrap_err().to_string();
    assert!(
        e.contains("`limits.udp_spare_buffers_max`: must be at most 268435456"),
        "{e}"
    );
    let e = s
        .apply_toml("[limits]\nudp_spare_buffers_max = -1\n")
        .unwrap_err();
    assert!(e.contains("line 2: `limits.udp_spare_buffers_max`"), "{e}");
    let var = (
        "RPCD_LIMITS__UDP_SPARE_BUFFERS_MAX".to_owned(),
        "0".to_owned(),
    );
    s.apply_env([var]).unwrap();
    assert_eq!(s.limits.udp_spare_buffers_max, 0);
}
