// expect: `&[u8]` would travel as a list of numbers, not as bytes
#[rpcd_client::service]
pub trait Blob {
    fn put(&self, data: &[u8]) -> u64;
}

fn main() {}
