//! Long-lived sessions that survive restarts: every connection is handed to
//! the next generation with its own counter, and keeps its TCP connection.
//!
//! ```text
//! cargo run --example sessions -- --listen 127.0.0.1:7006 --control /tmp/sessions.sock
//! nc 127.0.0.1 7006            # session=1 pid=... generation=1
//! incr                         # 1 1 pid=... generation=1
//! (shellflip restart /tmp/sessions.sock)
//! incr                         # 1 2 pid=<new pid> generation=2   — the same connection
//! quit
//! ```
//!
//! On connect the service writes `session=<id> pid=<pid> generation=<g>`;
//! each line `incr` is answered `<id> <n> pid=<pid> generation=<g>`, `n`
//! being that session's own counter; `quit` closes the connection. When a
//! successor takes over, each session is handed to it between two lines,
//! with the bytes of a line it has started reading.
use clap::Parser;
use shellflip::{restartable, Context, HandOverFailed, HandoverState, HandoverStream};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:7006")]
    listen: String,
    #[arg(long, default_value = "/tmp/shellflip-sessions.sock")]
    control: std::path::PathBuf,
}

/// The service's state: the last session id given.
#[derive(HandoverState, Default)]
struct Sessions {
    last_id: u64,
}

/// One session's state, handed over with its connection.
#[derive(HandoverState, Default)]
struct Session {
    id: u64,
    count: u64,
}

#[restartable]
async fn main(ctx: Context<Sessions>) -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    raise_open_file_limit();
    let listener = ctx.tcp_listener("sessions", args.listen.as_str())?;
    ctx.control_socket(&args.control)?;
    let sessions = ctx.state();
    // Sessions the previous generation hands over, as they come.
    let mut handed_over = ctx.connections::<Session>();
    let from_predecessor = ctx.clone();
    ctx.spawn(async move {
        while let Some(connection) = handed_over.next().await {
            match connection {
                Ok(c) => {
                    let HandoverStream::Tcp(stream) = c.stream else {
                        continue;
                    };
                    from_predecessor.spawn(serve(
                        from_predecessor.clone(),
                        stream,
                        c.state,
                        c.unread,
                    ));
                }
                Err(e) => eprintln!("a session could not be taken over: {e}"),
            }
        }
    });
    ctx.ready()?;
    println!(
        "ready pid={} generation={} listen={}",
        std::process::id(),
        ctx.generation(),
        listener.local_addr()?
    );
    while let Some((mut stream, _)) = ctx.accept(&listener).await {
        let id = sessions.update(|s| {
            s.last_id += 1;
            s.last_id
        });
        let line = format!(
            "session={id} pid={} generation={}\n",
            std::process::id(),
            ctx.generation()
        );
        if stream.write_all(line.as_bytes()).await.is_ok() {
            ctx.spawn(serve(
                ctx.clone(),
                stream,
                Session { id, count: 0 },
                Vec::new(),
            ));
        }
    }
    Ok(())
}

/// Serves one session: its lines until `quit` or the end; when a successor
/// took over, hands the session to it between two lines.
async fn serve(
    ctx: Context<Sessions>,
    stream: tokio::net::TcpStream,
    mut session: Session,
    unread: Vec<u8>,
) {
    let (pid, generation) = (std::process::id(), ctx.generation());
    let mut pending = unread; // bytes of a line not complete yet
    let mut reader = BufReader::new(stream);
    loop {
        let line = match take_line(&mut pending) {
            Some(line) => line,
            None => {
                tokio::select! {
                    read = reader.read_until(b'\n', &mut pending) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(_) => continue,
                    },
                    // Between two lines (what was read of the next one goes along).
                    _ = ctx.shutdown() => {
                        pending.extend_from_slice(reader.buffer());
                        let stream = reader.into_inner();
                        match ctx.hand_over(stream, &session, &pending).await {
                            Ok(()) => return,
                            // Stopping (no successor), or it could not take it: serve on.
                            Err(HandOverFailed { stream: Some(HandoverStream::Tcp(stream)), .. }) => {
                                reader = BufReader::new(stream);
                                pending.clear();
                                serve_until_quit(&mut reader, &mut session, pid, generation).await;
                            }
                            Err(_) => {}
                        }
                        return;
                    }
                }
            }
        };
        if !answer(reader.get_mut(), &line, &mut session, pid, generation).await {
            return;
        }
    }
}

/// After a failed `hand_over`: serves the session here until it ends (the
/// drain timeout bounds it).
async fn serve_until_quit(
    reader: &mut BufReader<tokio::net::TcpStream>,
    session: &mut Session,
    pid: u32,
    generation: u64,
) {
    let mut line = String::new();
    while matches!(reader.read_line(&mut line).await, Ok(n) if n > 0) {
        let text = std::mem::take(&mut line);
        if !answer(
            reader.get_mut(),
            text.trim_end().as_bytes(),
            session,
            pid,
            generation,
        )
        .await
        {
            return;
        }
    }
}

/// Answers one line; false when the session ends.
async fn answer(
    stream: &mut tokio::net::TcpStream,
    line: &[u8],
    session: &mut Session,
    pid: u32,
    generation: u64,
) -> bool {
    match line {
        b"incr" => {
            session.count += 1;
            let reply = format!(
                "{} {} pid={pid} generation={generation}\n",
                session.id, session.count
            );
            stream.write_all(reply.as_bytes()).await.is_ok()
        }
        b"quit" => false,
        _ => stream
            .write_all(b"unknown command; use incr or quit\n")
            .await
            .is_ok(),
    }
}

/// The first complete line in `pending`, without its newline.
fn take_line(pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    let end = pending.iter().position(|&b| b == b'\n')?;
    let mut line: Vec<u8> = pending.drain(..=end).collect();
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Some(line)
}

/// Thousands of sessions need thousands of descriptors: the soft limit goes
/// up to the hard one.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
