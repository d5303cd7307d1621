// expect: an RPC argument borrows only as `&str` or `&serde_bytes::Bytes`
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Point {
    pub x: i64,
}

#[rpcd_client::service]
pub trait Plot {
    fn add(&self, p: &Point) -> u64;
}

fn main() {}
