// expect: RPC arguments cannot be `&mut`
#[rpcd_client::service]
pub trait Kv {
    fn put(&self, key: &mut String) -> bool;
}

fn main() {}
