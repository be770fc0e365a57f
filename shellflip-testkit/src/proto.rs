//! The lines every test service speaks: the echo example, the other
//! examples the tests start, and the benchmark's services.
//!
//! Each generation prints `ready pid=<pid> generation=<g> listen=<addr>`
//! on stdout once it serves (more `key=value` fields may follow, e.g.
//! `udp=<addr>`); each connection gets the greeting
//! `pid=<pid> generation=<g> served=<n>` and then its lines echoed.

use std::net::SocketAddr;

/// A `ready pid=.. generation=.. [listen=..] [udp=..] [metrics=..]` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// The process of the generation that is ready.
    pub pid: u32,
    /// 1 for the first generation, +1 per restart.
    pub generation: u64,
    /// `listen=` (TCP services).
    pub listen: Option<SocketAddr>,
    /// `udp=` (the Unix + UDP example).
    pub udp: Option<SocketAddr>,
    /// `metrics=` (the HTTP example with `--metrics`): where `/metrics` is
    /// served.
    pub metrics: Option<SocketAddr>,
}

/// The greeting of one echo connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting {
    /// The process that accepted the connection.
    pub pid: u32,
    /// Its generation.
    pub generation: u64,
    /// The connections served so far, carried across restarts by services
    /// that keep state.
    pub served: u64,
}

/// The value of `key=value` among the whitespace-separated fields of `line`.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

/// Parses a greeting line (a trailing newline and extra fields are
/// ignored); `None` if `pid`, `generation` or `served` is missing.
pub fn parse_greeting(line: &str) -> Option<Greeting> {
    Some(Greeting {
        pid: field(line, "pid")?.parse().ok()?,
        generation: field(line, "generation")?.parse().ok()?,
        served: field(line, "served")?.parse().ok()?,
    })
}

/// Parses a `ready ...` line; `None` for any other line.
pub fn parse_ready(line: &str) -> Option<Ready> {
    let rest = line.strip_prefix("ready ")?;
    Some(Ready {
        pid: field(rest, "pid")?.parse().ok()?,
        generation: field(rest, "generation")?.parse().ok()?,
        listen: field(rest, "listen").and_then(|v| v.parse().ok()),
        udp: field(rest, "udp").and_then(|v| v.parse().ok()),
        metrics: field(rest, "metrics").and_then(|v| v.parse().ok()),
    })
}

/// The greeting a service sends, with its newline.
pub fn greeting(pid: u32, generation: u64, served: u64) -> String {
    format!("pid={pid} generation={generation} served={served}\n")
}

/// The ready line a TCP service prints (without a newline).
pub fn ready_line(pid: u32, generation: u64, listen: SocketAddr) -> String {
    format!("ready pid={pid} generation={generation} listen={listen}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_echo_examples_ready_line() {
        let r = parse_ready("ready pid=42 generation=3 listen=127.0.0.1:7000\n").unwrap();
        assert_eq!(r.pid, 42);
        assert_eq!(r.generation, 3);
        assert_eq!(r.listen, Some("127.0.0.1:7000".parse().unwrap()));
        assert_eq!(r.udp, None);
        let r = parse_ready("ready pid=1 generation=1 udp=127.0.0.1:9").unwrap();
        assert_eq!(
            (r.listen, r.udp),
            (None, Some("127.0.0.1:9".parse().unwrap()))
        );
        let r =
            parse_ready("ready pid=1 generation=1 listen=127.0.0.1:8 metrics=127.0.0.1:9").unwrap();
        assert_eq!(r.metrics, Some("127.0.0.1:9".parse().unwrap()));
    }

    #[test]
    fn ready_line_round_trips_and_tolerates_extra_fields() {
        let line = ready_line(7, 1, "127.0.0.1:1".parse().unwrap()) + " state_bytes=10";
        let r = parse_ready(&line).unwrap();
        assert_eq!((r.pid, r.generation), (7, 1));
        assert!(parse_ready("ready generation=1").is_none());
        assert!(parse_ready("readypid=1 generation=1").is_none());
        assert!(parse_ready("INFO ready pid=1 generation=1").is_none());
        assert!(parse_ready("ready pid=x generation=1").is_none());
    }

    #[test]
    fn parses_greetings() {
        let g = parse_greeting(&greeting(9, 4, 100)).unwrap();
        assert_eq!(
            g,
            Greeting {
                pid: 9,
                generation: 4,
                served: 100
            }
        );
        assert!(parse_greeting("pid=1 generation=2").is_none());
        assert!(parse_greeting("hello").is_none());
        assert!(parse_greeting("").is_none());
    }
}
