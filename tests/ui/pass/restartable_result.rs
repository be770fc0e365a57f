// `Result<(), E>` with the service's own error type: `?` converts into it
// and an explicit `return` keeps the declared type.
use std::fmt;

#[derive(Debug)]
enum AppError {
    Io(std::io::Error),
    Config(String),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Io(e) => write!(f, "i/o: {e}"),
            AppError::Config(e) => write!(f, "config: {e}"),
        }
    }
}

impl From<std::io::Error> for AppError {
    fn from(e: std::io::Error) -> Self {
        AppError::Io(e)
    }
}

fn check(ok: bool) -> std::io::Result<()> {
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::other("no"))
    }
}

#[shellflip::restartable(ready_timeout = "5s")]
async fn main(ctx: shellflip::Context) -> Result<(), AppError> {
    check(true)?;
    if ctx.generation() == 0 {
        return Err(AppError::Config("generations count from 1".into()));
    }
    Ok(())
}
