//! The protocol shared by the echo example and the bench services.
//!
//! Each generation prints `ready pid=<pid> generation=<g> listen=<addr>` on
//! stdout once it serves; each connection gets the greeting
//! `pid=<pid> generation=<g> served=<n>` and then its lines echoed.

use std::net::SocketAddr;

/// A `ready ...` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub pid: u32,
    pub generation: u64,
    pub listen: Option<SocketAddr>,
}

/// A greeting line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting {
    pub pid: u32,
    pub generation: u64,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

/// Parses a `ready pid=.. generation=.. [listen=..]` line (extra fields are
/// ignored); `None` for any other line.
pub fn parse_ready(line: &str) -> Option<Ready> {
    let rest = line.trim_end().strip_prefix("ready ")?;
    Some(Ready {
        pid: field(rest, "pid")?.parse().ok()?,
        generation: field(rest, "generation")?.parse().ok()?,
        listen: field(rest, "listen").and_then(|v| v.parse().ok()),
    })
}

/// Parses a greeting `pid=.. generation=.. served=..` (`served` optional).
pub fn parse_greeting(line: &str) -> Option<Greeting> {
    let line = line.trim_end();
    Some(Greeting {
        pid: field(line, "pid")?.parse().ok()?,
        generation: field(line, "generation")?.parse().ok()?,
    })
}

/// The greeting a service sends.
pub fn greeting(pid: u32, generation: u64, served: u64) -> String {
    format!("pid={pid} generation={generation} served={served}\n")
}

/// The ready line a service prints.
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
                generation: 4
            }
        );
        assert_eq!(
            parse_greeting("pid=1 generation=2"),
            Some(Greeting {
                pid: 1,
                generation: 2
            })
        );
        assert!(parse_greeting("hello").is_none());
        assert!(parse_greeting("").is_none());
    }
}
