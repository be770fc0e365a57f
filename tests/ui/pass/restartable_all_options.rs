// Every option, in its usual spelling.
#[shellflip::restartable(
    control = "ui-pass-options.sock",
    restart_signal = "SIGUSR2",
    ready_timeout = "1m30s",
    probation = "250ms",
    max_draining = 3,
    fd_store = true,
    drain_timeout = "500ms",
    pid_file = "ui-pass-options.pid",
    flavor = "multi_thread",
    worker_threads = 2,
    on_state_mismatch = "fresh",
    spawner = "process",
)]
async fn main() {}
