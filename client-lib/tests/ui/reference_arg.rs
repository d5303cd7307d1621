#[rpcd_client::service]
pub trait Kv {
    fn get(&self, key: &str) -> Option<String>;
}

fn main() {}
