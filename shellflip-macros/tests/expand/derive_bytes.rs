// A `Vec<u8>` field and a `#[handover(bytes)]` field: both carried as one
// MessagePack byte string.
#[derive(HandoverState)]
struct Blobs {
    blob: Vec<u8>,
    #[handover(bytes)]
    boxed: Box<[u8]>,
    count: u64,
}
