// A generic struct: the bounds follow the field types.
#[derive(HandoverState)]
struct Registry<T: Clone, const N: usize>
where
    T: std::fmt::Debug,
{
    items: Vec<T>,
    slots: [u8; N],
    #[handover(skip)]
    scratch: Option<T>,
}
