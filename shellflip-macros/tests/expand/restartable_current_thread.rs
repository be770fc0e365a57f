// The single-threaded runtime and a sub-millisecond ready timeout.
#[restartable(flavor = "current_thread", ready_timeout = "250us", restart_signal = "SIGHUP")]
pub async fn main(_ctx: ::shellflip::Context<Counters>) -> std::io::Result<()> {
    Ok(())
}
