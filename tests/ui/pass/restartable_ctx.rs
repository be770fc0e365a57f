// A stateful service: the context parameter names the state type.
use shellflip::{restartable, Context, HandoverState};

#[derive(HandoverState, Default)]
struct State {
    served: u64,
}

/// Doc comments and lint attributes stay on the generated `main`.
#[restartable]
#[allow(unused_mut)]
async fn main(mut ctx: Context<State>) {
    let state = ctx.state_or_else(State::default);
    state.update(|s| s.served += 1);
    assert_eq!(state.lock().served, 1);
    assert_eq!(ctx.generation(), 1);
}
