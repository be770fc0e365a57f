// A tuple struct: fds are named by index, data keeps its order.
#[derive(HandoverState)]
struct Pair(u32, #[handover(fd)] std::net::UdpSocket, #[handover(skip)] Vec<u8>, String);
