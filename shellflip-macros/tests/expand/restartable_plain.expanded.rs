fn main() -> ::std::process::ExitCode {
    async fn main() {
        println!("serving");
    }
    ::shellflip::run(::shellflip::Config::default(), |_: ::shellflip::Context| main())
}
