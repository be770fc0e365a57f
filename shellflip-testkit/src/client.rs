//! One client of the echo protocol: connect, read the greeting, send a
//! line, read it back, close — step by step ([`Connection`]) or whole
//! ([`exchange`]) — with every failure classified by the step it happened
//! in ([`ExchangeError::kind`]); and a connection held open ([`Held`]).

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use crate::proto::{parse_greeting, Greeting};
use crate::wait::{wait_until, EVENT_TIMEOUT};

/// Socket timeouts of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Bound on the TCP connect.
    pub connect: Duration,
    /// Bound on each read and write.
    pub io: Duration,
}

impl Default for Timeouts {
    /// The tests' generous bounds: 10 s to connect, 20 s per read or write.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            io: Duration::from_secs(20),
        }
    }
}

/// The step of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Connecting and setting the socket up.
    Connect,
    /// Reading the greeting.
    Greeting,
    /// Sending a line and reading it back.
    Echo,
    /// Closing: our side first, then waiting for the server's close.
    Close,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connect",
            Stage::Greeting => "greeting",
            Stage::Echo => "echo",
            Stage::Close => "close",
        })
    }
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// A socket error.
    #[error("{stage}: {source}")]
    Io {
        /// Where it happened.
        stage: Stage,
        /// What the socket said.
        source: io::Error,
    },
    /// The server closed the connection before sending what was expected.
    #[error("closed by the server before the {stage}")]
    Closed {
        /// What was expected ([`Stage::Greeting`] or [`Stage::Echo`]).
        stage: Stage,
    },
    /// The first line is not a greeting.
    #[error("bad greeting {line:?}")]
    BadGreeting {
        /// The line read.
        line: String,
    },
    /// The line came back different.
    #[error("echoed {echoed:?} instead of {sent:?}")]
    BadEcho {
        /// The line sent.
        sent: String,
        /// What came back.
        echoed: String,
    },
}

impl ExchangeError {
    /// The step it happened in.
    pub fn stage(&self) -> Stage {
        match self {
            ExchangeError::Io { stage, .. } | ExchangeError::Closed { stage } => *stage,
            ExchangeError::BadGreeting { .. } => Stage::Greeting,
            ExchangeError::BadEcho { .. } => Stage::Echo,
        }
    }

    /// A short class for counting failures in a report: `connect: refused`,
    /// `reset before greeting`, `timeout before echo`, `bad echo`, ...
    pub fn kind(&self) -> &'static str {
        use Stage::*;
        let (stage, error) = match self {
            ExchangeError::Io { stage, source } => (*stage, source.kind()),
            ExchangeError::Closed { stage: Greeting } => return "closed before greeting",
            ExchangeError::Closed { .. } => return "closed before echo",
            ExchangeError::BadGreeting { .. } => return "bad greeting",
            ExchangeError::BadEcho { .. } => return "bad echo",
        };
        match (stage, error) {
            (Connect, ErrorKind::ConnectionRefused) => "connect: refused",
            (Connect, ErrorKind::ConnectionReset) => "connect: reset",
            (Connect, ErrorKind::TimedOut | ErrorKind::WouldBlock) => "connect: timeout",
            (Connect, _) => "connect: other",
            (Greeting, ErrorKind::ConnectionReset) => "reset before greeting",
            (Greeting, ErrorKind::TimedOut | ErrorKind::WouldBlock) => "timeout before greeting",
            (Greeting, _) => "error before greeting",
            (Echo, ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => "reset before echo",
            (Echo, ErrorKind::TimedOut | ErrorKind::WouldBlock) => "timeout before echo",
            (Echo, _) => "error before echo",
            (Close, ErrorKind::ConnectionReset) => "reset at close",
            (Close, ErrorKind::TimedOut | ErrorKind::WouldBlock) => "timeout at close",
            (Close, _) => "error at close",
        }
    }
}

/// One open connection to an echo service.
#[derive(Debug)]
pub struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    /// Connects to `addr` with `timeouts` (and `TCP_NODELAY`).
    pub fn connect(addr: SocketAddr, timeouts: Timeouts) -> Result<Connection, ExchangeError> {
        let io = |source| ExchangeError::Io {
            stage: Stage::Connect,
            source,
        };
        let stream = TcpStream::connect_timeout(&addr, timeouts.connect).map_err(io)?;
        stream.set_read_timeout(Some(timeouts.io)).map_err(io)?;
        stream.set_write_timeout(Some(timeouts.io)).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let reader = BufReader::new(stream.try_clone().map_err(io)?);
        Ok(Connection {
            reader,
            writer: stream,
        })
    }

    /// Reads one line as it is, newline included; empty at end of stream.
    pub fn read_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        Ok(line)
    }

    /// Sends `line` and a newline, in one write.
    pub fn send_line(&mut self, line: &str) -> io::Result<()> {
        self.writer.write_all(format!("{line}\n").as_bytes())
    }

    /// Reads and parses the greeting.
    pub fn greeting(&mut self) -> Result<Greeting, ExchangeError> {
        let line = self.read_line().map_err(|source| ExchangeError::Io {
            stage: Stage::Greeting,
            source,
        })?;
        if line.is_empty() {
            return Err(ExchangeError::Closed {
                stage: Stage::Greeting,
            });
        }
        parse_greeting(&line).ok_or(ExchangeError::BadGreeting { line })
    }

    /// Sends `line` and checks that it comes back.
    pub fn echo(&mut self, line: &str) -> Result<(), ExchangeError> {
        let io = |source| ExchangeError::Io {
            stage: Stage::Echo,
            source,
        };
        self.send_line(line).map_err(io)?;
        let echoed = self.read_line().map_err(io)?;
        if echoed.is_empty() {
            return Err(ExchangeError::Closed { stage: Stage::Echo });
        }
        if echoed.trim_end() != line {
            return Err(ExchangeError::BadEcho {
                sent: line.to_string(),
                echoed,
            });
        }
        Ok(())
    }

    /// Closes our side, then waits for the server to close its own, so
    /// that the server's task for this connection has finished when this
    /// returns.
    pub fn close(mut self) -> Result<(), ExchangeError> {
        let io = |source| ExchangeError::Io {
            stage: Stage::Close,
            source,
        };
        self.writer.shutdown(Shutdown::Write).map_err(io)?;
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).map_err(io)?;
        Ok(())
    }
}

/// One whole exchange with [`Timeouts::default`]: connect, greeting, echo
/// of `line`, close. The greeting.
pub fn exchange(addr: SocketAddr, line: &str) -> Result<Greeting, ExchangeError> {
    let mut connection = Connection::connect(addr, Timeouts::default())?;
    let greeting = connection.greeting()?;
    connection.echo(line)?;
    connection.close()?;
    Ok(greeting)
}

/// An echo connection held open after its greeting, e.g. to keep a
/// generation draining.
#[derive(Debug)]
pub struct Held {
    connection: Connection,
    /// The greeting line, as read.
    pub greeting: String,
}

/// Connects to `addr` and reads the greeting.
///
/// # Panics
///
/// If the connection or the read fails.
pub fn hold_connection(addr: SocketAddr) -> Held {
    let timeouts = Timeouts {
        connect: EVENT_TIMEOUT,
        io: EVENT_TIMEOUT,
    };
    let mut connection =
        Connection::connect(addr, timeouts).unwrap_or_else(|e| panic!("hold a connection: {e}"));
    let greeting = connection
        .read_line()
        .unwrap_or_else(|e| panic!("read the greeting of a held connection: {e}"));
    Held {
        connection,
        greeting,
    }
}

impl Held {
    /// Finishes the exchange: sends `line`, reads its echo, closes; returns
    /// the echo as read (newline included; empty if the server closed).
    ///
    /// # Panics
    ///
    /// If the write or the read fails.
    pub fn finish(mut self, line: &str) -> String {
        self.connection
            .send_line(line)
            .unwrap_or_else(|e| panic!("send {line:?} on a held connection: {e}"));
        self.connection
            .read_line()
            .unwrap_or_else(|e| panic!("read the echo of {line:?} on a held connection: {e}"))
    }

    /// Waits until the listener at `addr` refuses connections (a stop has
    /// begun), then [`Held::finish`]es the exchange.
    pub fn finish_after_listener_closes(self, addr: SocketAddr, line: &str) -> String {
        wait_until("the listener to close", EVENT_TIMEOUT, || {
            TcpStream::connect(addr).is_err()
        });
        self.finish(line)
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A one-connection server that greets, then runs `then`.
    fn serve_once(then: impl FnOnce(TcpStream) + Send + 'static) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(b"pid=7 generation=2 served=5\n").unwrap();
            then(stream);
        });
        addr
    }

    #[test]
    fn a_whole_exchange_returns_the_greeting() {
        let addr = serve_once(|stream| {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            (&stream).write_all(line.as_bytes()).unwrap();
        });
        let greeting = exchange(addr, "hello").unwrap();
        assert_eq!(
            (greeting.pid, greeting.generation, greeting.served),
            (7, 2, 5)
        );
    }

    #[test]
    fn failures_are_classified_by_step() {
        let closed = serve_once(drop);
        let e = exchange(closed, "hello").unwrap_err();
        assert!(
            matches!(e.kind(), "closed before echo" | "reset before echo"),
            "{e}"
        );
        assert_eq!(e.stage(), Stage::Echo);

        let wrong = serve_once(|mut stream| {
            let mut line = [0u8; 6];
            stream.read_exact(&mut line).unwrap();
            stream.write_all(b"goodbye\n").unwrap();
        });
        let e = exchange(wrong, "hello").unwrap_err();
        assert_eq!(e.kind(), "bad echo");
        assert_eq!(e.to_string(), r#"echoed "goodbye\n" instead of "hello""#);

        // A port nobody listens on any more.
        let gone = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = exchange(gone, "hello").unwrap_err();
        assert_eq!(e.kind(), "connect: refused", "{e}");
    }
}
