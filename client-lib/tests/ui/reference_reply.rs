// expect: RPC replies are owned values
#[rpcd_client::service]
pub trait Kv {
    fn name(&self) -> &'static str;
}

fn main() {}
