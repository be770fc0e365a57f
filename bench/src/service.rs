//! What every benchmarked service does with a connection, written once so
//! that the systems differ only in how they restart: the echo example's
//! handler (greeting, then each line echoed until EOF), the pid protocol's
//! (read a line, answer the server's pid, close), the choice between them
//! and of the Tokio runtime's flavor, and command-line parsing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shellflip_testkit::proto::greeting;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
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

/// The longest line the pid protocol reads before it answers.
pub const MAX_PID_LINE: u64 = 1024;

/// The pid protocol (the peers' own examples' kind of exchange): reads one
/// line (up to [`MAX_PID_LINE`] bytes, or until EOF), answers
/// `pid=<pid>\n` and closes the connection.
pub async fn pid_answer(mut stream: TcpStream, pid: u32) -> std::io::Result<()> {
    let mut line = Vec::new();
    BufReader::new((&mut stream).take(MAX_PID_LINE))
        .read_until(b'\n', &mut line)
        .await?;
    stream.write_all(pid_line(pid).as_bytes()).await?;
    stream.shutdown().await
}

/// The pid protocol's answer, with its newline.
pub fn pid_line(pid: u32) -> String {
    format!("pid={pid}\n")
}

/// The pid in a pid protocol answer (`pid=<pid>`, a trailing newline
/// allowed).
pub fn parse_pid_line(answer: &str) -> Option<u32> {
    answer.trim_end().strip_prefix("pid=")?.parse().ok()
}

/// What a service speaks on each connection (`--protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Greeting `pid=.. generation=.. served=..`, then lines echoed until
    /// EOF ([`echo`]).
    Echo,
    /// A line in, `pid=..` out, closed ([`pid_answer`]).
    Pid,
}

impl Protocol {
    pub fn parse(text: &str) -> Option<Protocol> {
        match text {
            "echo" => Some(Protocol::Echo),
            "pid" => Some(Protocol::Pid),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Echo => "echo",
            Protocol::Pid => "pid",
        }
    }
}

/// Serves one connection in `protocol`: the one handler of every
/// benchmarked service. `served` is the connection's number (the echo
/// greeting's `served=`).
pub async fn serve(
    protocol: Protocol,
    stream: TcpStream,
    pid: u32,
    generation: u64,
    served: u64,
) -> std::io::Result<()> {
    match protocol {
        Protocol::Echo => echo(stream, greeting(pid, generation, served)).await,
        Protocol::Pid => pid_answer(stream, pid).await,
    }
}

/// The Tokio scheduler of a service (`--flavor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `current_thread`: everything on the main thread.
    CurrentThread,
    /// `multi_thread`: one worker per core (Tokio's default).
    MultiThread,
}

impl Flavor {
    /// Both, in the order the benchmark runs them.
    pub const ALL: [Flavor; 2] = [Flavor::CurrentThread, Flavor::MultiThread];

    /// `current_thread` or `multi_thread`, as `#[tokio::main(flavor = ..)]`
    /// and `#[restartable(flavor = ..)]` write it.
    pub fn parse(text: &str) -> Option<Flavor> {
        match text {
            "current_thread" => Some(Flavor::CurrentThread),
            "multi_thread" => Some(Flavor::MultiThread),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Flavor::CurrentThread => "current_thread",
            Flavor::MultiThread => "multi_thread",
        }
    }

    /// The runtime builder of this flavor, with every driver enabled: what
    /// the peers' services build their runtime with.
    pub fn builder(self) -> tokio::runtime::Builder {
        let mut builder = match self {
            Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
        };
        builder.enable_all();
        builder
    }

    /// The same for ours: `shellflip::Config`'s `flavor`.
    pub fn shellflip(self) -> shellflip::RuntimeFlavor {
        match self {
            Flavor::CurrentThread => shellflip::RuntimeFlavor::CurrentThread,
            Flavor::MultiThread => shellflip::RuntimeFlavor::MultiThread,
        }
    }
}

/// `--listen ADDR --control PATH [--state-mb N] [--protocol echo|pid]
/// [--flavor current_thread|multi_thread]`, the flags of the echo example
/// (plus the state size of the state service, and the protocol and runtime
/// of the services that serve both).
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    pub listen: SocketAddr,
    pub control: PathBuf,
    pub state_mb: usize,
    /// `echo` unless given.
    pub protocol: Protocol,
    /// `multi_thread` unless given.
    pub flavor: Flavor,
}

impl Args {
    /// Parses the flags from `args` (without the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
        let mut listen = None;
        let mut control = None;
        let mut state_mb = 1;
        let mut protocol = Protocol::Echo;
        let mut flavor = Flavor::MultiThread;
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
                "--protocol" => {
                    let v = value()?;
                    protocol = Protocol::parse(&v)
                        .ok_or_else(|| format!("--protocol {v}: expected echo or pid"))?;
                }
                "--flavor" => {
                    let v = value()?;
                    flavor = Flavor::parse(&v).ok_or_else(|| {
                        format!("--flavor {v}: expected current_thread or multi_thread")
                    })?;
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(Args {
            listen: listen.ok_or("--listen ADDR is required")?,
            control: control.ok_or("--control PATH is required")?,
            state_mb,
            protocol,
            flavor,
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
        assert_eq!(a.protocol, Protocol::Echo);
        assert_eq!(a.flavor, Flavor::MultiThread);
        let a = args(&[
            "--listen",
            "127.0.0.1:1",
            "--control",
            "c",
            "--protocol",
            "pid",
            "--flavor",
            "current_thread",
        ])
        .unwrap();
        assert_eq!(
            (a.protocol, a.flavor),
            (Protocol::Pid, Flavor::CurrentThread)
        );
        let base = ["--listen", "127.0.0.1:1", "--control", "c"];
        assert!(args(&[&base[..], &["--protocol", "http"]].concat()).is_err());
        assert!(args(&[&base[..], &["--flavor", "multi"]].concat()).is_err());
    }

    #[test]
    fn names_round_trip_and_pid_lines_parse() {
        for f in Flavor::ALL {
            assert_eq!(Flavor::parse(f.name()), Some(f));
        }
        for p in [Protocol::Echo, Protocol::Pid] {
            assert_eq!(Protocol::parse(p.name()), Some(p));
        }
        assert_eq!(parse_pid_line(&pid_line(4242)), Some(4242));
        assert_eq!(parse_pid_line("pid=7"), Some(7));
        assert_eq!(parse_pid_line("pid="), None);
        assert_eq!(parse_pid_line("pid=7 generation=1"), None);
        assert_eq!(parse_pid_line(""), None);
    }

    #[tokio::test]
    async fn the_pid_protocol_reads_a_line_answers_and_closes() {
        use tokio::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            pid_answer(stream, 77).await
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"hello\n").await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "pid=77\n");
        server.await.unwrap().unwrap();
    }
}
