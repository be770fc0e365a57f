// Data fields, a skipped field and fd fields, with a version.
#[derive(HandoverState, Debug)]
#[handover(version = 2)]
struct State {
    served: u64,
    names: Vec<String>,
    #[handover(skip)]
    cache: std::collections::HashMap<String, String>,
    #[handover(fd)]
    listener: tokio::net::TcpListener,
    #[handover(fd)]
    log: std::sync::Arc<std::fs::File>,
}
