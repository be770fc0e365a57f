//! What every benchmarked service does with a connection, written once so
//! that the systems differ only in how they restart: the echo example's
//! handler (greeting, then each line echoed until EOF), and command-line
//! parsing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long an old generation waits for its in-flight connections.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Greets, then echoes lines until EOF (the echo example's `echo`).
pub async fn echo(stream: TcpStream, greeting: String) -> std::io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    writer.write_all(greeting.as_bytes()).await?;
    let mut lines = BufReader::new(reader).lines();
    while let Some(line) = lines.next_line().await? {
        writer.write_all(format!("{line}\n").as_bytes()).await?;
    }
    Ok(())
}

/// `--listen ADDR --control PATH [--state-mb N]`, the flags of the echo
/// example (plus the state size of the state service).
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    pub listen: SocketAddr,
    pub control: PathBuf,
    pub state_mb: usize,
}

impl Args {
    /// Parses the flags from `args` (without the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
        let mut listen = None;
        let mut control = None;
        let mut state_mb = 1;
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--listen" => {
                    let v = value()?;
                    listen = Some(v.parse().map_err(|e| format!("--listen {v}: {e}"))?);
                }
                "--control" => control = Some(PathBuf::from(value()?)),
                "--state-mb" => {
                    let v = value()?;
                    state_mb = v.parse().map_err(|e| format!("--state-mb {v}: {e}"))?;
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(Args {
            listen: listen.ok_or("--listen ADDR is required")?,
            control: control.ok_or("--control PATH is required")?,
            state_mb,
        })
    }

    /// Parses the process's own flags, exiting with status 2 on an error.
    pub fn from_env() -> Args {
        Args::parse(std::env::args().skip(1)).unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(2)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args, String> {
        Args::parse(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_the_flags() {
        let a = args(&["--listen", "127.0.0.1:7000", "--control", "/tmp/c.sock"]).unwrap();
        assert_eq!(a.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(a.control, PathBuf::from("/tmp/c.sock"));
        assert_eq!(a.state_mb, 1);
        let a = args(&["--state-mb", "100", "--control", "c", "--listen", "[::1]:1"]).unwrap();
        assert_eq!(a.state_mb, 100);
        assert!(args(&["--listen", "nope", "--control", "c"]).is_err());
        assert!(args(&["--listen"]).is_err());
        assert!(args(&["--control", "c"]).is_err());
        assert!(args(&["--listen", "127.0.0.1:1", "--control", "c", "-x"]).is_err());
    }
}
