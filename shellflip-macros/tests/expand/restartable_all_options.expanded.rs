fn main() -> ::std::process::ExitCode {
    async fn main(_: shellflip::Context) {}
    ::shellflip::run(
        ::shellflip::Config::default()
            .control_socket("/run/app.sock")
            .restart_signal(::shellflip::Signal::SIGUSR2)
            .ready_timeout(::std::time::Duration::from_secs(90))
            .probation(::std::time::Duration::from_millis(250))
            .max_draining(3)
            .fd_store(true)
            .drain_timeout(::std::time::Duration::from_millis(500))
            .pid_file("/run/app.pid")
            .flavor(::shellflip::RuntimeFlavor::MultiThread)
            .worker_threads(4)
            .on_state_mismatch(::shellflip::StateMismatch::Fresh)
            .spawner(::shellflip::SpawnerMode::Inline),
        main,
    )
}
