// The single-threaded runtime and a ready timeout in microseconds.
#[restartable(flavor = "current_thread", ready_timeout = "1500us", restart_signal = "SIGHUP")]
pub async fn main(_ctx: ::shellflip::Context<Counters>) -> std::io::Result<()> {
    Ok(())
}
