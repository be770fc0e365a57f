// A stateful service returning a Result, with doc and lint attributes kept.
/// The service.
#[restartable(control = "/tmp/x.sock")]
#[allow(unused_mut)]
async fn main(mut ctx: shellflip::Context<State>) -> Result<(), MyErr> {
    let listener = ctx.tcp_listener("http", "127.0.0.1:8080")?;
    ctx.ready()?;
    serve(&ctx, listener).await?;
    Ok(())
}
