pub fn main() -> ::std::process::ExitCode {
    async fn main(_ctx: ::shellflip::Context<Counters>) -> std::io::Result<()> {
        Ok(())
    }
    ::shellflip::run(
        ::shellflip::Config::default()
            .restart_signal(::shellflip::Signal::SIGHUP)
            .ready_timeout(::std::time::Duration::from_micros(1500))
            .flavor(::shellflip::RuntimeFlavor::CurrentThread),
        main,
    )
}
