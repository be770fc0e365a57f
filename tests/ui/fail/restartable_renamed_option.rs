// `ready_grace` became `probation`: the old name is refused with the new one.
#[shellflip::restartable(ready_grace = "1s", fd_store = "yes", max_draining = 0)]
async fn main() {}
