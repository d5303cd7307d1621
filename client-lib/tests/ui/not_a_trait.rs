// expect: goes on a trait
#[rpcd_client::service]
pub struct Kv {
    map: std::collections::HashMap<String, String>,
}

fn main() {}
