// expect: unknown rpcd attribute
#[rpcd_client::service]
pub trait Kv {
    #[rpcd(retries = 3)]
    fn get(&self, key: String) -> Option<String>;
}

fn main() {}
