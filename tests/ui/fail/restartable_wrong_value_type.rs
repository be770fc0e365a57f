#[shellflip::restartable(worker_threads = "4", ready_timeout = 30, control = /run/app.sock, pid_file = PID_FILE)]
async fn main() {}
