//! Errors: what went wrong, and where.

use super::*;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// What went wrong, before the path is known.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Problem {
    /// The bytes are not what the encoder writes.
    #[error("{0}")]
    Read(ReadError),
    /// Nested deeper than [`MAX_STATE_DEPTH`].
    #[error("nested more than {MAX_STATE_DEPTH} levels deep (the depth limit)")]
    TooDeep,
    /// A value of another type than this build declares.
    #[error("this build expects {expected}, received {received}")]
    Type { expected: String, received: String },
    /// A field of this build's struct that was not received.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A variant this build's enum does not have.
    #[error("unknown variant `{variant}`")]
    UnknownVariant {
        variant: String,
        expected: &'static [&'static str],
    },
    /// Anything else a type refused (lengths, its own checks).
    #[error("{0}")]
    Other(String),
}

/// A decoding error with the path where it happened.
#[derive(Debug)]
pub(crate) struct DeError(pub(super) Box<(Problem, Option<String>)>);

impl DeError {
    pub(super) fn new(problem: Problem) -> Self {
        DeError(Box::new((problem, None)))
    }

    pub(crate) fn problem(&self) -> &Problem {
        &self.0 .0
    }

    /// The path (`State.inner.x`), when known.
    pub(crate) fn path(&self) -> Option<&str> {
        self.0 .1.as_deref()
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = self.path() {
            write!(f, "`{path}`: ")?;
        }
        write!(f, "{}", self.problem())
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(Problem::Other(msg.to_string()))
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        let (expected, received) = (exp.to_string(), unexp.to_string());
        DeError::new(Problem::Type { expected, received })
    }

    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        DeError::new(Problem::Other(format!(
            "received {len} elements, this build expects {exp}"
        )))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let variant = variant.to_owned();
        DeError::new(Problem::UnknownVariant { variant, expected })
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::new(Problem::MissingField(field))
    }
}

pub(super) type Result<T> = std::result::Result<T, DeError>;
