// Every problem is reported in one compilation.
#[shellflip::restartable(
    contrl = "/run/app.sock",
    ready_timeout = "soon",
    restart_signal = "KILL",
    restart_signal = "USR2",
    worker_threads = "4",
)]
fn main<T>(ctx: shellflip::Context, extra: T) {}
