// A unit struct carries nothing but its type name and fingerprint.
#[derive(HandoverState, Default)]
struct Marker;
