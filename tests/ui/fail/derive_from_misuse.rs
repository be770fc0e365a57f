// `from` without a `version`, naming the struct itself, given twice, or
// not a type.
#[derive(shellflip::HandoverState)]
#[handover(from = "v1::State")]
struct State {
    served: u64,
}

#[derive(shellflip::HandoverState)]
#[handover(version = 2, from = "Other", from = "Other")]
struct Other {
    served: u64,
}

#[derive(shellflip::HandoverState)]
#[handover(version = 2, from = 1)]
struct Third {
    served: u64,
}

#[derive(shellflip::HandoverState)]
#[handover(version = 2, from = "not a type!")]
struct Fourth {
    served: u64,
}

fn main() {}
