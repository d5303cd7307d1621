// expect: not `self` by value
#[rpcd_client::service]
pub trait Kv {
    fn get(self, key: String) -> Option<String>;
    fn put(&mut self, key: String, value: String);
}

fn main() {}
