// expect: async methods are not supported
#[rpcd_client::service]
pub trait Kv {
    async fn get(&self, key: String) -> Option<String>;
}

fn main() {}
