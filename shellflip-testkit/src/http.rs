//! HTTP: a load of real HTTP/1.1 clients (hyper's) across restarts —
//! fresh connections and keep-alive ones — bounded in time, and what they
//! saw ([`HttpLoad`]); raw HTTP/1.1 exchanges, step by step, for the races
//! of a drain ([`RawHttp`]); and whether the server accepted a connection,
//! to send a request on it only after that ([`wait_accepted`]).
//!
//! The services under test answer `GET /` with `pid=<pid> generation=<g>
//! requests=<n>` (examples/http.rs and the benchmark's HTTP services).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONNECTION, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;

use crate::harness::Echo;
use crate::wait::{wait_until, EVENT_TIMEOUT};

/// How one client of an [`HttpLoad`] uses connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKind {
    /// One request per new connection.
    Fresh,
    /// One connection for as many requests as the server allows: a new
    /// one only after a response with `Connection: close`, or when the
    /// server closed it while idle (seen before sending: counted in
    /// [`HttpReport::closed_idle`], not a failure).
    KeepAlive,
    /// A keep-alive client that pauses between its requests, for a
    /// pseudo-random time below the given one: its connection is often
    /// idle, as a connection pool's is.
    Pausing(Duration),
}

/// One request of an [`HttpLoad`].
#[derive(Debug, Clone)]
pub struct HttpSample {
    /// The client's kind.
    pub kind: ClientKind,
    /// When the request began (for a fresh client: the connect).
    pub started: Instant,
    /// Until the whole response was read, or the failure.
    pub latency: Duration,
    /// The pid that answered, or why the request failed.
    pub outcome: Result<u32, String>,
    /// The response said `Connection: close`.
    pub connection_close: bool,
}

/// What the clients of an [`HttpLoad`] did.
#[derive(Debug, Default)]
pub struct HttpReport {
    /// Every request, by client, in order.
    pub samples: Vec<HttpSample>,
    /// Keep-alive connections found closed by the server before a request
    /// was sent on them (no request was lost, but the server closed an
    /// idle connection).
    pub closed_idle: u64,
}

impl HttpReport {
    /// Requests answered with a 200.
    pub fn ok(&self) -> usize {
        self.samples.iter().filter(|s| s.outcome.is_ok()).count()
    }

    /// The failed requests: kind and reason.
    pub fn failures(&self) -> Vec<(ClientKind, &str)> {
        self.samples
            .iter()
            .filter_map(|s| s.outcome.as_ref().err().map(|e| (s.kind, e.as_str())))
            .collect()
    }

    /// Panics, listing the first failures and `context` (a service's
    /// stderr, say), if any request failed or the server closed an idle
    /// keep-alive connection.
    pub fn assert_no_failures(&self, context: &str) {
        let failures = self.failures();
        assert!(
            failures.is_empty() && self.closed_idle == 0,
            "{} failed requests of {}, {} idle keep-alive connections closed by the server: {:?}\n{context}",
            failures.len(),
            self.samples.len(),
            self.closed_idle,
            &failures[..failures.len().min(10)],
        );
    }
}

/// Running HTTP clients. Stop them with [`HttpLoad::stop`] for their
/// report.
#[derive(Debug)]
pub struct HttpLoad {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    by_pid: Arc<Mutex<HashMap<u32, u64>>>,
    thread: Option<JoinHandle<HttpReport>>,
}

/// Bound on one request (connect included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl HttpLoad {
    /// Starts `fresh` fresh-connection clients and `keep_alive` keep-alive
    /// clients (see [`ClientKind`]), each sending `GET path` to `addr`, one
    /// request after the other, until stopped or for `max_time` at most.
    /// They run on one thread of their own (a current-thread Tokio
    /// runtime).
    ///
    /// # Panics
    ///
    /// If the thread or its runtime cannot be started.
    pub fn start(
        addr: SocketAddr,
        fresh: usize,
        keep_alive: usize,
        path: &str,
        max_time: Duration,
    ) -> HttpLoad {
        Self::start_mix(
            addr,
            &[
                (ClientKind::Fresh, fresh),
                (ClientKind::KeepAlive, keep_alive),
            ],
            path,
            max_time,
        )
    }

    /// Like [`start`](Self::start), with `count` clients of each `kind`
    /// in `clients`.
    ///
    /// # Panics
    ///
    /// If the thread or its runtime cannot be started.
    pub fn start_mix(
        addr: SocketAddr,
        clients: &[(ClientKind, usize)],
        path: &str,
        max_time: Duration,
    ) -> HttpLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let by_pid = Arc::new(Mutex::new(HashMap::new()));
        let shared = Shared {
            addr,
            path: path.to_owned(),
            stop: Arc::clone(&stop),
            ok: Arc::clone(&ok),
            by_pid: Arc::clone(&by_pid),
            deadline: Instant::now() + max_time,
        };
        let kinds: Vec<ClientKind> = clients
            .iter()
            .flat_map(|&(kind, count)| std::iter::repeat_n(kind, count))
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("build the HTTP clients' runtime: {e}"));
        let thread = std::thread::Builder::new()
            .name("http-load".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let shared = Arc::new(shared);
                    let clients: Vec<_> = kinds
                        .into_iter()
                        .enumerate()
                        .map(|(i, kind)| tokio::spawn(run_client(kind, i, Arc::clone(&shared))))
                        .collect();
                    let mut report = HttpReport::default();
                    for client in clients {
                        match client.await {
                            Ok((samples, closed_idle)) => {
                                report.samples.extend(samples);
                                report.closed_idle += closed_idle;
                            }
                            Err(e) => panic!("an HTTP client panicked: {e}"),
                        }
                    }
                    report
                })
            })
            .unwrap_or_else(|e| panic!("spawn the HTTP clients' thread: {e}"));
        HttpLoad {
            stop,
            ok,
            by_pid,
            thread: Some(thread),
        }
    }

    /// Requests answered so far.
    pub fn answered(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Requests answered so far by `pid`.
    pub fn answered_by(&self, pid: u32) -> u64 {
        lock(&self.by_pid).get(&pid).copied().unwrap_or(0)
    }

    /// Waits until `n` more requests than now were answered by `pid`.
    ///
    /// # Panics
    ///
    /// If that does not happen within [`EVENT_TIMEOUT`].
    pub fn wait_answers_from(&self, pid: u32, n: u64) {
        let target = self.answered_by(pid) + n;
        wait_until(
            &format!("{n} answers from pid {pid}"),
            EVENT_TIMEOUT,
            || self.answered_by(pid) >= target,
        );
    }

    /// Stops the clients (each finishes its request in flight) and returns
    /// their report.
    ///
    /// # Panics
    ///
    /// If a client panicked.
    pub fn stop(mut self) -> HttpReport {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(report)) => report,
            Some(Err(_)) => panic!("the HTTP clients' thread panicked"),
            None => HttpReport::default(),
        }
    }
}

impl Drop for HttpLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Shared {
    addr: SocketAddr,
    path: String,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    by_pid: Arc<Mutex<HashMap<u32, u64>>>,
    deadline: Instant,
}

impl Shared {
    fn go_on(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && Instant::now() < self.deadline
    }

    fn answered(&self, pid: u32) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        *lock(&self.by_pid).entry(pid).or_insert(0) += 1;
    }
}

type Sender = SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// One request on `sender`: the pid that answered and whether the
/// response said `Connection: close`.
async fn request(sender: &mut Sender, path: &str) -> Result<(u32, bool), String> {
    let request = Request::get(path)
        .header(HOST, "shellflip.test")
        .body(Empty::new())
        .map_err(|e| format!("build the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let close = response
        .headers()
        .get(CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    let body = String::from_utf8_lossy(&body);
    if !status.is_success() {
        return Err(format!("status {status}: {body}"));
    }
    let pid = field(&body, "pid")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("no pid in {body:?}"))?;
    Ok((pid, close))
}

async fn run_client(kind: ClientKind, index: usize, shared: Arc<Shared>) -> (Vec<HttpSample>, u64) {
    // xorshift64: the pauses of a pausing client, different for each.
    let mut seed =
        0x9E37_79B9_7F4A_7C15_u64 ^ (index as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
    let mut samples = Vec::new();
    let mut closed_idle = 0;
    let mut kept: Option<Sender> = None;
    while shared.go_on() {
        let started = Instant::now();
        let attempt = async {
            let mut sender = match kept.take() {
                Some(mut sender) => match sender.ready().await {
                    Ok(()) => sender,
                    Err(_) => {
                        // Closed by the server while idle: nothing sent.
                        closed_idle += 1;
                        connect(shared.addr).await?
                    }
                },
                None => connect(shared.addr).await?,
            };
            let (pid, close) = request(&mut sender, &shared.path).await?;
            if kind != ClientKind::Fresh && !close {
                kept = Some(sender);
            }
            Ok::<_, String>((pid, close))
        };
        let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
        };
        let latency = started.elapsed();
        if let Ok((pid, _)) = &outcome {
            shared.answered(*pid);
        }
        samples.push(HttpSample {
            kind,
            started,
            latency,
            connection_close: outcome.as_ref().is_ok_and(|(_, close)| *close),
            outcome: outcome.map(|(pid, _)| pid),
        });
        if let ClientKind::Pausing(longest) = kind {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let micros = u64::try_from(longest.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            let until = Instant::now() + Duration::from_micros(seed % micros);
            // In short steps, to stop soon when told.
            while shared.go_on() && Instant::now() < until {
                let step = until.saturating_duration_since(Instant::now());
                tokio::time::sleep(step.min(Duration::from_millis(20))).await;
            }
        }
    }
    (samples, closed_idle)
}

/// The value of `key=` in a `key=value key=value` body.
pub fn field<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    body.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

/// One HTTP/1.1 response, as read by [`RawHttp`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body (a `Content-Length` one).
    pub body: String,
}

impl RawResponse {
    /// The first header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The response says `Connection: close`.
    pub fn connection_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    /// The pid in the body (`pid=<pid>`).
    ///
    /// # Panics
    ///
    /// If the body has none.
    pub fn pid(&self) -> u32 {
        field(&self.body, "pid")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {:?}", self.body))
    }
}

/// An HTTP/1.1 connection driven by hand: connect, then send requests and
/// read responses one at a time, so that a test decides when each byte is
/// sent (a connection accepted but not yet sent its request, an idle
/// keep-alive connection).
#[derive(Debug)]
pub struct RawHttp {
    reader: BufReader<TcpStream>,
}

impl RawHttp {
    /// Connects to `addr` (reads and writes bounded by [`EVENT_TIMEOUT`]).
    pub fn connect(addr: SocketAddr) -> io::Result<RawHttp> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(EVENT_TIMEOUT))?;
        stream.set_write_timeout(Some(EVENT_TIMEOUT))?;
        Ok(RawHttp {
            reader: BufReader::new(stream),
        })
    }

    /// Sends `GET path` (keep-alive: no `Connection` header).
    pub fn send(&mut self, path: &str) -> io::Result<()> {
        write!(
            self.reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: shellflip.test\r\n\r\n"
        )
    }

    /// Reads one response with a `Content-Length` body.
    pub fn read_response(&mut self) -> io::Result<RawResponse> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection without a response",
            ));
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| bad(format!("header {header:?}")))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let mut response = RawResponse {
            status,
            headers,
            body: String::new(),
        };
        let length: usize = response
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("no content-length".to_owned()))?;
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        response.body = String::from_utf8_lossy(&body).into_owned();
        Ok(response)
    }

    /// [`send`](Self::send), then [`read_response`](Self::read_response).
    pub fn get(&mut self, path: &str) -> io::Result<RawResponse> {
        self.send(path)?;
        self.read_response()
    }

    /// The connection's socket.
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// True if the server closes the connection (a read returns end of
    /// file) within [`EVENT_TIMEOUT`]; false if it sends more bytes.
    pub fn closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0))
    }
}

/// `addr` as `/proc/net/tcp` and `/proc/net/tcp6` write it: each 32-bit
/// word of the address in hex as the kernel stores it, `:`, the port.
fn proc_net_addr(addr: SocketAddr) -> String {
    let words: Vec<[u8; 4]> = match addr.ip() {
        std::net::IpAddr::V4(ip) => vec![ip.octets()],
        std::net::IpAddr::V6(ip) => ip
            .octets()
            .chunks_exact(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect(),
    };
    let ip: String = words
        .into_iter()
        .map(|w| format!("{:08X}", u32::from_ne_bytes(w)))
        .collect();
    format!("{ip}:{:04X}", addr.port())
}

/// Whether the server side of the client connection `stream` has been
/// accepted by the process listening (`None` if the server side is not
/// found). A connection waiting in the listener's accept queue has no
/// socket inode yet (`/proc/net/tcp` shows 0); `accept()` gives it one.
pub fn is_accepted(stream: &TcpStream) -> Option<bool> {
    let (client, server) = (stream.local_addr().ok()?, stream.peer_addr().ok()?);
    let (client, server) = (proc_net_addr(client), proc_net_addr(server));
    let table = if stream.peer_addr().ok()?.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let table = std::fs::read_to_string(table).ok()?;
    table.lines().skip(1).find_map(|line| {
        // sl local remote state queues timer retransmits uid timeout inode
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&server.as_str()) && fields.get(2) == Some(&client.as_str()) {
            fields.get(9).map(|inode| *inode != "0")
        } else {
            None
        }
    })
}

/// Waits until the client connection `stream` has been accepted by the
/// server (see [`is_accepted`]): by the generation serving when it
/// connected, if no restart happened meanwhile.
///
/// # Panics
///
/// If the server side is not found, or not accepted within
/// [`EVENT_TIMEOUT`].
pub fn wait_accepted(stream: &TcpStream) {
    wait_until("the connection to be accepted", EVENT_TIMEOUT, || {
        is_accepted(stream).unwrap_or_else(|| panic!("no server side for {stream:?}"))
    });
}

/// Waits until the service's stderr has `needle` (a line the service
/// prints at an event).
///
/// # Panics
///
/// If it does not within [`EVENT_TIMEOUT`].
pub fn wait_stderr(service: &Echo, needle: &str) {
    wait_until(&format!("{needle:?} on stderr"), EVENT_TIMEOUT, || {
        service.stderr().contains(needle)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_accepted_once_the_server_calls_accept() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        wait_until("the connection to be queued", EVENT_TIMEOUT, || {
            is_accepted(&client) == Some(false)
        });
        let _accepted = listener.accept().unwrap();
        assert_eq!(is_accepted(&client), Some(true));
        wait_accepted(&client);
    }

    #[test]
    fn addresses_as_proc_net_writes_them() {
        let v4: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let v6: SocketAddr = "[::1]:443".parse().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(proc_net_addr(v4), "0100007F:1F90");
            assert_eq!(proc_net_addr(v6), "00000000000000000000000001000000:01BB");
        }
    }

    #[test]
    fn fields_of_a_body() {
        let body = "pid=12 generation=3 requests=40\n";
        assert_eq!(field(body, "pid"), Some("12"));
        assert_eq!(field(body, "requests"), Some("40"));
        assert_eq!(field(body, "served"), None);
    }
}
