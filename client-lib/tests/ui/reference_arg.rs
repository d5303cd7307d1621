// expect: RPC arguments and replies are owned values
#[rpcd_client::service]
pub trait Kv {
    fn get(&self, key: &str) -> Option<String>;
}

fn main() {}
