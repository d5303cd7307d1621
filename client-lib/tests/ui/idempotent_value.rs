// expect: `idempotent` takes no value
#[rpcd_client::service]
pub trait Kv {
    #[rpcd(idempotent = true)]
    fn get(&self, key: String) -> Option<String>;
}

fn main() {}
