//! Misuse of `#[rpcd_client::service]` is a compile error pointing at the offending
//! tokens. Each case in `ui/` has its expected compiler output in a `.stderr` file beside
//! it; regenerate them with `TRYBUILD=overwrite cargo test -p rpcd-client --test compile_fail`
//! after a deliberate change to a message.

#[test]
fn service_misuse_is_a_spanned_compile_error() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
