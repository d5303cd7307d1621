// expect: generic methods cannot be RPC functions
#[rpcd_client::service]
pub trait Kv {
    fn get<K: serde::Serialize>(&self, key: K) -> Option<String>;
}

fn main() {}
