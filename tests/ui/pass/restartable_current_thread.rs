// The single-threaded runtime, other spellings of a signal and durations,
// and a probation turned off with a bare `0` (the one number without a unit).
#[shellflip::restartable(
    flavor = "current_thread",
    restart_signal = "hup",
    ready_timeout = "1h 2m 3s",
    drain_timeout = "2500us",
    probation = "0",
    on_state_mismatch = "fail",
)]
async fn main(_ctx: shellflip::Context) -> Result<(), String> {
    Ok(())
}
