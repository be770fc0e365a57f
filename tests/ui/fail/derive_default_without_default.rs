// `#[handover(default)]` needs the field type to implement `Default`.
struct Pool {
    size: u32,
}

impl serde::Serialize for Pool {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.size)
    }
}

impl<'de> serde::Deserialize<'de> for Pool {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u32::deserialize(d).map(|size| Pool { size })
    }
}

#[derive(shellflip::HandoverState)]
struct State {
    #[handover(default)]
    pool: Pool,
}

fn main() {}
