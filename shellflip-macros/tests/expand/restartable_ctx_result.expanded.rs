/// The service.
#[allow(unused_mut)]
fn main() -> ::std::process::ExitCode {
    async fn main(mut ctx: shellflip::Context<State>) -> Result<(), MyErr> {
        let listener = ctx.tcp_listener("http", "127.0.0.1:8080")?;
        ctx.ready()?;
        serve(&ctx, listener).await?;
        Ok(())
    }
    ::shellflip::run(::shellflip::Config::default().control_socket("/tmp/x.sock"), main)
}
