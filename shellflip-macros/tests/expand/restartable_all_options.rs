// Every option of the attribute.
#[restartable(
    control = "/run/app.sock",
    restart_signal = "USR2",
    ready_timeout = "1m30s",
    probation = "250ms",
    max_draining = 3,
    fd_store = true,
    drain_timeout = "500ms",
    pid_file = "/run/app.pid",
    flavor = "multi_thread",
    worker_threads = 4,
    on_state_mismatch = "fresh",
    spawner = "inline",
)]
async fn main(_: shellflip::Context) {}
