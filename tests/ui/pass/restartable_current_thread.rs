// The single-threaded runtime, other spellings of a signal and durations.
#[shellflip::restartable(
    flavor = "current_thread",
    restart_signal = "hup",
    ready_timeout = "1h 2m 3s",
    drain_timeout = "250us",
    on_state_mismatch = "fail",
)]
async fn main(_ctx: shellflip::Context) -> Result<(), String> {
    Ok(())
}
