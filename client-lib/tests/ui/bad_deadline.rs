// expect: bad deadline "2 hours"
#[rpcd_client::service]
pub trait Kv {
    #[rpcd(deadline = "2 hours")]
    fn get(&self, key: String) -> Option<String>;
}

fn main() {}
