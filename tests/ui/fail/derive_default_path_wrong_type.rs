// `default = "path"` names a function whose return type is not the field's.
fn port() -> &'static str {
    "8080"
}

#[derive(shellflip::HandoverState)]
struct State {
    #[handover(default = "port")]
    port: u16,
}

fn main() {}
