// The expansion keeps working when the service has its own items named like
// the ones it uses.
#![allow(dead_code, non_camel_case_types, non_snake_case)]

use shellflip::HandoverState;

struct Result;
struct Option;
struct Context;
struct Config;
struct Box;
struct Duration;
struct ExitCode;
struct Signal;
struct Vec;
struct Default;
struct Send;
struct T0;
struct __ShellflipEncode;
fn run() {}
fn Ok() {}
fn Err() {}
fn Some() {}
mod core {}

#[derive(HandoverState)]
struct State {
    served: u64,
    #[handover(skip)]
    names: std::vec::Vec<String>,
}

#[shellflip::restartable(ready_timeout = "5s", restart_signal = "SIGUSR2")]
async fn main(ctx: shellflip::Context<State>) -> std::result::Result<(), std::string::String> {
    let _ = ctx.generation();
    std::result::Result::Ok(())
}
