// expect: cannot be an RPC argument or reply
pub struct Key(String);

#[rpcd_client::service]
pub trait Kv {
    fn get(&self, key: Key) -> Option<String>;
}

fn main() {}
