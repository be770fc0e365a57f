use std::sync::Arc;

#[derive(shellflip::HandoverState)]
struct State {
    listener: tokio::net::TcpListener,
    shared: Arc<std::net::UdpSocket>,
    log: std::fs::File,
}

fn main() {}
