// expect: duplicate rpcd attribute `deadline`
#[rpcd_client::service]
pub trait Kv {
    #[rpcd(deadline = "1s")]
    #[rpcd(idempotent, deadline = "2s")]
    fn get(&self, key: String) -> Option<String>;
}

fn main() {}
