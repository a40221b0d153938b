//! `SshTransport`: one ssh2 session per host, reused; strict host keys; stdout and stderr drained together.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ssh2::{
    BlockDirections, CheckResult, ErrorCode, HashType, HostKeyType, KnownHostFileKind, Session,
};

use super::jump::{JumpPool, JumpSession};
use super::serve;
use super::wrap::{self, TextShell};
use super::{Command, ExecOutput, ExecRequest, Tail, Transport, TransportError};
use crate::inventory::{Auth, Become, Hop, HostEntry, HostKeyPolicy};

/// Numbers the spec files this process writes, so two at once never share a name.
static SPEC_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// libssh2 error codes this module tells apart.
pub(super) const LIBSSH2_ERROR_TIMEOUT: i32 = -9;
pub(super) const LIBSSH2_ERROR_EAGAIN: i32 = -37;

/// A host reached over SSH. The session opens on first use and stays open for the run; a
/// broken session is dropped and the next action reconnects.
pub struct SshTransport {
    host: HostEntry,
    jumps: Arc<JumpPool>,
    conn: Mutex<Option<Conn>>,
    /// The login's home, once asked (files written with `become` are staged there).
    home: Mutex<Option<String>>,
    /// How sudo takes this login, once probed.
    sudo: Mutex<Option<Sudo>>,
}

impl std::fmt::Debug for SshTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SshTransport({})", self.host.name)
    }
}

struct Conn {
    sess: Session,
    /// A duplicate of the session's socket: polled while waiting, shut down to cut (`cut`).
    socket: Stream,
    /// The last bastion on the way, when there is one: kept alive while the session rides it.
    via: Option<Arc<JumpSession>>,
    /// A command left running on its own channel (`exec_held`), waiting on its stdin; it goes
    /// with the session.
    held: Option<Held>,
    /// When a command last ended on this session: a session idle longer than its keepalive is
    /// proven by a channel of its own before a command is served on it (see `try_serve`).
    last_used: std::cell::Cell<Instant>,
}

/// The command `exec_held` kept, and whether it serves commands (`serve`).
struct Held {
    ch: ssh2::Channel,
    serves: bool,
}

/// The connection under a session: TCP to the server, or one end of a socket pair that a
/// bastion's session pumps through a `direct-tcpip` channel.
pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(super) fn try_clone(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    /// Cuts the connection at once, whoever else holds the descriptor.
    pub(super) fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// One SSH server to log in to, a host or a bastion, with what logging in needs.
pub(super) struct Endpoint<'a> {
    pub address: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub auth: &'a Auth,
    pub identity_files: &'a [PathBuf],
    pub identities_only: bool,
    pub known_hosts: &'a Path,
    pub host_key_policy: HostKeyPolicy,
    pub connect_timeout: Duration,
    pub keepalive: Duration,
}

impl<'a> Endpoint<'a> {
    fn of_host(h: &'a HostEntry) -> Self {
        Endpoint {
            address: &h.address,
            port: h.port,
            user: &h.user,
            auth: &h.auth,
            identity_files: &h.identity_files,
            identities_only: h.identities_only,
            known_hosts: &h.known_hosts,
            host_key_policy: h.host_key_policy,
            connect_timeout: h.connect_timeout,
            keepalive: h.keepalive,
        }
    }

    pub(super) fn of_hop(h: &'a Hop) -> Self {
        Endpoint {
            address: &h.address,
            port: h.port,
            user: &h.user,
            auth: &h.auth,
            identity_files: &h.identity_files,
            identities_only: h.identities_only,
            known_hosts: &h.known_hosts,
            host_key_policy: h.host_key_policy,
            connect_timeout: h.connect_timeout,
            keepalive: h.keepalive,
        }
    }

    pub(super) fn addr(&self) -> String {
        if self.address.contains(':') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }

    /// How long a blocking libssh2 call may wait on a silent peer.
    pub(super) fn io_timeout(&self) -> Duration {
        (self.keepalive * 3).max(self.connect_timeout)
    }
}

pub(super) fn code_of(e: &ssh2::Error) -> i32 {
    match e.code() {
        ErrorCode::Session(c) => c,
        ErrorCode::SFTP(c) => c,
    }
}

/// A TCP connection to the endpoint, tried on each address its name resolves to.
pub(super) fn tcp_connect(ep: &Endpoint<'_>) -> Result<TcpStream, TransportError> {
    let addr = ep.addr();
    let addrs: Vec<_> = (ep.address, ep.port)
        .to_socket_addrs()
        .map_err(|e| TransportError::Resolve {
            address: ep.address.to_string(),
            reason: e.to_string(),
        })?
        .collect();
    let mut last = TransportError::Resolve {
        address: ep.address.to_string(),
        reason: "no addresses".into(),
    };
    for a in addrs {
        match TcpStream::connect_timeout(&a, ep.connect_timeout) {
            Ok(s) => {
                // Nagle costs ~45 ms per command round trip on an exec channel (shared/notes).
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => {
                last = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => {
                        TransportError::Refused { addr: addr.clone() }
                    }
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                        TransportError::ConnectTimeout {
                            addr: addr.clone(),
                            secs: ep.connect_timeout.as_secs(),
                        }
                    }
                    _ => TransportError::Connect {
                        addr: addr.clone(),
                        reason: e.to_string(),
                    },
                }
            }
        }
    }
    Err(last)
}

/// Handshake, host key check and login over `stream`: a session ready for channels, and a
/// duplicate of its socket to poll and to cut.
pub(super) fn establish(
    ep: &Endpoint<'_>,
    stream: Stream,
) -> Result<(Session, Stream), TransportError> {
    let addr = ep.addr();
    let hs = |e: ssh2::Error| TransportError::Handshake {
        addr: addr.clone(),
        reason: if code_of(&e) == LIBSSH2_ERROR_TIMEOUT {
            format!("no SSH answer within {}s", ep.connect_timeout.as_secs())
        } else {
            e.message().to_string()
        },
    };
    let mut sess = Session::new().map_err(hs)?;
    // A handle on the socket outside libssh2, to cut the connection at once (`cut`).
    let socket = stream.try_clone().map_err(|e| TransportError::Connect {
        addr: addr.clone(),
        reason: e.to_string(),
    })?;
    sess.set_tcp_stream(stream);
    sess.set_timeout(ep.connect_timeout.as_millis().min(u32::MAX as u128) as u32);
    sess.handshake().map_err(hs)?;
    check_host_key(ep, &sess, &addr)?;
    authenticate(ep, &sess)?;
    sess.set_keepalive(true, ep.keepalive.as_secs().max(1) as u32);
    sess.set_timeout(ep.io_timeout().as_millis().min(u32::MAX as u128) as u32);
    Ok((sess, socket))
}

fn check_host_key(ep: &Endpoint<'_>, sess: &Session, addr: &str) -> Result<(), TransportError> {
    let (key, kind) = sess.host_key().ok_or_else(|| TransportError::Handshake {
        addr: addr.to_string(),
        reason: "the server sent no host key".into(),
    })?;
    let fingerprint = sess
        .host_key_hash(HashType::Sha256)
        .map(|d| {
            format!(
                "SHA256:{}",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(d)
            )
        })
        .unwrap_or_else(|| "unknown".into());
    let known = ep.known_hosts.display().to_string();
    let mut kh = sess
        .known_hosts()
        .map_err(|e| TransportError::Other(e.to_string()))?;
    if ep.known_hosts.exists() {
        kh.read_file(ep.known_hosts, KnownHostFileKind::OpenSSH)
            .map_err(|e| {
                TransportError::Other(format!("cannot read known_hosts {known}: {}", e.message()))
            })?;
    }
    match kh.check_port(ep.address, ep.port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(TransportError::HostKeyMismatch {
            addr: addr.to_string(),
            known_hosts: known,
            fingerprint,
        }),
        CheckResult::NotFound => match ep.host_key_policy {
            HostKeyPolicy::Strict => Err(TransportError::HostKeyUnknown {
                addr: addr.to_string(),
                known_hosts: known,
                fingerprint,
            }),
            HostKeyPolicy::AcceptNew => {
                record_host_key(sess, ep.known_hosts, ep.address, ep.port, key, kind).map_err(
                    |e| TransportError::Other(format!("cannot record host key in {known}: {e}")),
                )?;
                tracing::warn!(%addr, %fingerprint, "recorded new host key in {known}");
                Ok(())
            }
        },
        CheckResult::Failure => Err(TransportError::Other(format!(
            "cannot check host key of {addr}"
        ))),
    }
}

fn authenticate(ep: &Endpoint<'_>, sess: &Session) -> Result<(), TransportError> {
    let user = ep.user;
    let fail = |method: &str, reason: String| TransportError::Auth {
        user: user.to_string(),
        method: method.to_string(),
        reason,
    };
    let try_key = |path: &Path, pass: Option<&str>| -> Result<(), TransportError> {
        if !path.exists() {
            return Err(fail(
                "key",
                format!("key file {} not found", path.display()),
            ));
        }
        sess.userauth_pubkey_file(user, None, path, pass)
            .map_err(|e| fail("key", format!("{} ({})", e.message(), path.display())))
    };
    let method = match ep.auth {
        Auth::Key { path, passphrase } => {
            try_key(path, passphrase.as_ref().map(|s| s.expose()))?;
            "key"
        }
        Auth::Agent => {
            sess.userauth_agent(user)
                .map_err(|e| fail("agent", e.message().to_string()))?;
            "agent"
        }
        Auth::Password(p) => {
            sess.userauth_password(user, p.expose())
                .map_err(|e| fail("password", e.message().to_string()))?;
            "password"
        }
        Auth::Default => {
            // As ssh does: the agent's keys first (unless IdentitiesOnly), then the
            // IdentityFile keys, or the usual ones when none is named.
            let mut tried = Vec::new();
            if !ep.identities_only {
                if std::env::var_os("SSH_AUTH_SOCK").is_some() && sess.userauth_agent(user).is_ok()
                {
                    return Ok(());
                }
                tried.push("agent".to_string());
            }
            let home = crate::inventory::home().unwrap_or_default();
            let keys: Vec<PathBuf> = if ep.identity_files.is_empty() {
                ["id_ed25519", "id_ecdsa", "id_rsa"]
                    .iter()
                    .map(|k| Path::new(&home).join(".ssh").join(k))
                    .collect()
            } else {
                ep.identity_files.to_vec()
            };
            for p in keys {
                if p.exists() {
                    if try_key(&p, None).is_ok() && sess.authenticated() {
                        return Ok(());
                    }
                    tried.push(p.display().to_string());
                }
            }
            return Err(fail(
                "default",
                format!(
                    "no method worked (tried {}); set auth in the inventory",
                    if tried.is_empty() {
                        "nothing".to_string()
                    } else {
                        tried.join(", ")
                    }
                ),
            ));
        }
    };
    if sess.authenticated() {
        Ok(())
    } else {
        Err(fail(
            method,
            "the server did not accept the credentials".into(),
        ))
    }
}

impl SshTransport {
    pub fn new(host: HostEntry, jumps: Arc<JumpPool>) -> Self {
        SshTransport {
            host,
            jumps,
            conn: Mutex::new(None),
            home: Mutex::new(None),
            sudo: Mutex::new(None),
        }
    }

    /// How long a blocking libssh2 call may wait on a silent peer.
    fn io_timeout(&self) -> Duration {
        Endpoint::of_host(&self.host).io_timeout()
    }

    fn connect(&self) -> Result<Conn, TransportError> {
        let ep = Endpoint::of_host(&self.host);
        if self.host.jump.is_empty() {
            let (sess, socket) = establish(&ep, Stream::Tcp(tcp_connect(&ep)?))?;
            return Ok(Conn {
                sess,
                socket,
                via: None,
                held: None,
                last_used: std::cell::Cell::new(Instant::now()),
            });
        }
        let via = self.jumps.session(&self.host.jump)?;
        let tunnel = via.tunnel(&ep)?;
        match establish(&ep, Stream::Unix(tunnel)) {
            Ok((sess, socket)) => Ok(Conn {
                sess,
                socket,
                via: Some(via),
                held: None,
                last_used: std::cell::Cell::new(Instant::now()),
            }),
            Err(e) => Err(via.explain(e)),
        }
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, TransportError>,
    ) -> Result<T, TransportError> {
        let mut guard = crate::lock(&self.conn);
        if guard.is_none() {
            *guard = Some(self.connect()?);
        }
        let conn = guard.as_mut().expect("connected above");
        let r = f(conn).map_err(|e| conn.explain(e));
        forget_if_broken(&mut guard, &r);
        r
    }
}

impl Conn {
    /// A session lost with its bastion says so, naming the bastion.
    fn explain(&self, e: TransportError) -> TransportError {
        match &self.via {
            Some(v) if e.is_unreachable() => v.explain(e),
            _ => e,
        }
    }
}

/// After these errors the session's state is unknown: the next action starts a fresh one.
fn forget_if_broken<T>(slot: &mut Option<Conn>, r: &Result<T, TransportError>) {
    if let Err(e) = r {
        if e.is_unreachable()
            || matches!(
                e,
                TransportError::CommandTimeout { .. } | TransportError::Aborted
            )
        {
            *slot = None;
        }
    }
}

/// Appends the host's key to `path` as OpenSSH writes it. libssh2's own `KnownHosts` makes the
/// line (`[addr]:port` for a port other than 22); the line is appended with one `O_APPEND`
/// write rather than the whole file rewritten, so hosts connecting in parallel keep each
/// other's lines.
fn record_host_key(
    sess: &Session,
    path: &Path,
    address: &str,
    port: u16,
    key: &[u8],
    kind: HostKeyType,
) -> std::io::Result<()> {
    let host = if port == 22 {
        address.to_string()
    } else {
        format!("[{address}]:{port}")
    };
    let lib = |e: ssh2::Error| std::io::Error::other(e.message().to_string());
    let mut one = sess.known_hosts().map_err(lib)?;
    one.add(&host, key, "", kind.into()).map_err(lib)?;
    let entry = one
        .iter()
        .map_err(lib)?
        .into_iter()
        .next()
        .ok_or_else(|| std::io::Error::other("libssh2 kept no entry"))?;
    let mut line = one
        .write_string(&entry, KnownHostFileKind::OpenSSH)
        .map_err(lib)?;
    if !line.ends_with('\n') {
        line.push('\n');
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(line.as_bytes())
}

/// Waits up to `timeout` for the session's socket to be readable (or writable, when libssh2
/// waits to write); whether anything arrived. `socket` is a duplicate of the session's own
/// descriptor: the same socket, so the same readiness.
pub(super) fn wait_socket(socket: &impl AsFd, dirs: BlockDirections, timeout: Duration) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut events = PollFlags::IN;
    if matches!(dirs, BlockDirections::Outbound | BlockDirections::Both) {
        events |= PollFlags::OUT;
    }
    let mut fds = [PollFd::new(socket, events)];
    let timeout = Timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR)
}

fn dropped(e: impl std::fmt::Display) -> TransportError {
    TransportError::Dropped {
        reason: e.to_string(),
    }
}

impl Conn {
    fn blocking_err(&self, e: ssh2::Error, silent_for: Duration) -> TransportError {
        if code_of(&e) == LIBSSH2_ERROR_TIMEOUT {
            TransportError::Unresponsive {
                secs: silent_for.as_secs(),
            }
        } else {
            dropped(e.message())
        }
    }

    /// Whether a held channel, idle between commands, has not ended: what has arrived on the
    /// socket since is read (a server's keepalive, output a served command's leftover process
    /// wrote after its end, which belongs to no command), and an end or an error says no.
    fn still_there(&self, ch: &mut ssh2::Channel) -> bool {
        if !wait_socket(&self.socket, BlockDirections::Inbound, Duration::ZERO) {
            return !ch.eof();
        }
        self.sess.set_blocking(false);
        let mut buf = [0u8; 4096];
        let alive = read_available(ch, &mut buf, |_, b| {
            tracing::debug!("{} bytes on a serving channel between commands", b.len())
        })
        .is_ok();
        self.sess.set_blocking(true);
        alive && !ch.eof()
    }

    /// Opens a channel; nothing has been sent to the host's shell yet.
    fn open_channel(&self, io: Duration) -> Result<ssh2::Channel, TransportError> {
        self.sess.set_blocking(true);
        self.sess
            .channel_session()
            .map_err(|e| self.blocking_err(e, io))
    }

    fn run(
        &mut self,
        mut ch: ssh2::Channel,
        line: &str,
        req: &ExecRequest<'_>,
        hold_stdin: bool,
        keepalive: Duration,
        io: Duration,
    ) -> Result<ExecOutput, TransportError> {
        self.start(&mut ch, line, req, hold_stdin, io)?;
        let (out, err, _) = self.drain(&mut ch, req, keepalive, Until::End)?;
        self.end(ch, out, err, hold_stdin, io)
    }

    /// Sends the exec request, then the command's stdin and its end-of-file unless `hold_stdin`.
    fn start(
        &self,
        ch: &mut ssh2::Channel,
        line: &str,
        req: &ExecRequest<'_>,
        hold_stdin: bool,
        io: Duration,
    ) -> Result<(), TransportError> {
        self.sess.set_blocking(true);
        ch.exec(line).map_err(|e| self.blocking_err(e, io))?;
        // A held stdin gets no end-of-file: the wrapper's watcher waits for sshd to close it.
        if !hold_stdin {
            if let Some(data) = req.stdin {
                ch.write_all(data).map_err(dropped)?;
            }
            ch.send_eof().map_err(|e| self.blocking_err(e, io))?;
        }
        Ok(())
    }

    /// Reads stdout and stderr until the channel's end, or what `until` asks for before it
    /// (then `true`: the command, or the script that served it, still runs).
    fn drain(
        &self,
        ch: &mut ssh2::Channel,
        req: &ExecRequest<'_>,
        keepalive: Duration,
        mut until: Until<'_>,
    ) -> Result<(Tail, Tail, bool), TransportError> {
        // Non-blocking from here: stdout and stderr share one SSH window, so reading one to EOF
        // while the other fills deadlocks (shared/notes). Drain both, poll the socket between.
        let sess = &self.sess;
        sess.set_blocking(false);
        let mut out = Tail::new(req.max_output);
        let mut err = Tail::new(req.max_output);
        let mut buf = vec![0u8; 32 * 1024];
        let start = Instant::now();
        let mut last_rx = Instant::now();
        let mut next_keepalive = Instant::now() + keepalive;
        let dead_after = keepalive * 3;
        let result = loop {
            let progressed = read_available(ch, &mut buf, |stream_id, piece| {
                let tail = if stream_id == 0 { &mut out } else { &mut err };
                let mut deliver = |b: &[u8]| {
                    if b.is_empty() {
                        return;
                    }
                    if let Some(sink) = &req.on_output {
                        sink(if stream_id == 0 { "stdout" } else { "stderr" }, b);
                    }
                    tail.push(b)
                };
                match &mut until {
                    Until::Served(ends) => ends.feed(stream_id, piece, &mut deliver),
                    _ => deliver(piece),
                }
            })
            .map_err(dropped)?;
            if progressed {
                last_rx = Instant::now();
                let reached = match &until {
                    Until::End => false,
                    Until::Line(r) => has_line(&out.buf, r),
                    Until::Served(ends) => ends.complete(),
                };
                if reached {
                    break Ok(true);
                }
            }
            if ch.eof() {
                if matches!(until, Until::Served(_)) {
                    // The serving script is gone before the command's end was told.
                    break Err(dropped(
                        "the script serving the command ended before it did",
                    ));
                }
                break Ok(false);
            }
            if req.abort.load(Ordering::SeqCst) {
                break Err(TransportError::Aborted);
            }
            if start.elapsed() >= req.timeout {
                break Err(TransportError::CommandTimeout {
                    secs: req.timeout.as_secs_f64(),
                    partial: Box::new(ExecOutput {
                        code: None,
                        signal: None,
                        stdout: std::mem::take(&mut out.buf),
                        stderr: std::mem::take(&mut err.buf),
                        truncated: out.truncated || err.truncated,
                    }),
                });
            }
            if Instant::now() >= next_keepalive {
                match sess.keepalive_send() {
                    Ok(secs) => {
                        next_keepalive =
                            Instant::now() + Duration::from_secs(u64::from(secs.max(1)))
                    }
                    Err(e) if code_of(&e) == LIBSSH2_ERROR_EAGAIN => {}
                    Err(e) => break Err(dropped(e.message())),
                }
            }
            if last_rx.elapsed() >= dead_after {
                break Err(TransportError::Unresponsive {
                    secs: last_rx.elapsed().as_secs(),
                });
            }
            if !progressed {
                let wait = Duration::from_millis(200)
                    .min(req.timeout.saturating_sub(start.elapsed()))
                    .min(next_keepalive.saturating_duration_since(Instant::now()));
                // Anything arriving, a keepalive reply included, proves the peer is alive.
                if wait_socket(&self.socket, sess.block_directions(), wait) {
                    last_rx = Instant::now();
                }
            }
        };
        if matches!(
            result,
            Err(TransportError::Aborted | TransportError::CommandTimeout { .. })
        ) {
            // The command must end now: cutting the connection ends the SSH session on the host,
            // and the wrapper, re-parented, kills the command's process group. Closing the
            // channel politely would wait on the host instead.
            self.socket.shutdown();
        }
        sess.set_blocking(true);
        self.last_used.set(Instant::now());
        result.map(|ready| (out, err, ready))
    }

    /// After the channel's end: its exit status (or signal) with what was read.
    fn end(
        &self,
        mut ch: ssh2::Channel,
        out: Tail,
        err: Tail,
        hold_stdin: bool,
        io: Duration,
    ) -> Result<ExecOutput, TransportError> {
        if hold_stdin {
            // sshd closed the held stdin itself when the command ended; a server that waits for
            // the client's end-of-file before it closes the channel gets it now (an error only
            // says the channel is closed already).
            let _ = ch.send_eof();
        }
        ch.wait_close().map_err(|e| self.blocking_err(e, io))?;
        let signal = ch.exit_signal().ok().and_then(|s| s.exit_signal);
        let code = if signal.is_some() {
            None
        } else {
            Some(ch.exit_status().map_err(dropped)?)
        };
        Ok(collected(out, err, code, signal))
    }
}

/// What a command printed, with how it ended.
fn collected(out: Tail, err: Tail, code: Option<i32>, signal: Option<String>) -> ExecOutput {
    ExecOutput {
        code,
        signal,
        truncated: out.truncated || err.truncated,
        stdout: out.buf,
        stderr: err.buf,
    }
}

/// Where `Conn::drain` stops reading.
enum Until<'a> {
    /// The channel's end.
    End,
    /// A whole line of stdout starting with this, or the end.
    Line(&'a str),
    /// Both ends of a served command.
    Served(&'a mut serve::Ends),
}

/// Whether `buf` has a whole line (ended by a newline) that starts with `prefix`.
fn has_line(buf: &[u8], prefix: &str) -> bool {
    let Some(last) = buf.iter().rposition(|&b| b == b'\n') else {
        return false;
    };
    buf[..last]
        .split(|&b| b == b'\n')
        .any(|l| l.starts_with(prefix.as_bytes()))
}

/// Reads what both streams of `ch` hold now (the session non-blocking), handing each piece to
/// `got` with its stream (0 stdout, 1 stderr); whether anything came.
fn read_available(
    ch: &mut ssh2::Channel,
    buf: &mut [u8],
    mut got: impl FnMut(usize, &[u8]),
) -> std::io::Result<bool> {
    let mut progressed = false;
    for stream_id in [0, 1] {
        loop {
            let r = if stream_id == 0 {
                ch.read(buf)
            } else {
                ch.stderr().read(buf)
            };
            match r {
                Ok(0) => break,
                Ok(n) => {
                    progressed = true;
                    got(stream_id, &buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(progressed)
}

/// How sudo takes this login on this host: probed once per session when a password is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sudo {
    /// No password asked (NOPASSWD, or none known to send).
    NoPassword,
    /// It asks: the password goes first on the command's stdin (`sudo -S`).
    Password,
}

impl SshTransport {
    /// Opens a channel on the cached session (connecting, or reconnecting once when an idle
    /// session was dropped on the way) and runs `line` on it; `hold_stdin`: the line is the
    /// wrapper told so (`wrap::holds_stdin`), and its stdin gets nothing, not even end-of-file.
    fn run_line(
        &self,
        line: &str,
        req: &ExecRequest<'_>,
        hold_stdin: bool,
    ) -> Result<ExecOutput, TransportError> {
        let keepalive = self.host.keepalive;
        let io = self.io_timeout();
        self.on_channel(|conn, ch| conn.run(ch, line, req, hold_stdin, keepalive, io))
    }

    /// Runs `f` with a new channel on the cached session (connecting, or reconnecting once when
    /// an idle session was dropped on the way); a session broken on the way is forgotten.
    fn on_channel<T>(
        &self,
        f: impl FnOnce(&mut Conn, ssh2::Channel) -> Result<T, TransportError>,
    ) -> Result<T, TransportError> {
        let io = self.io_timeout();
        let mut guard = crate::lock(&self.conn);
        let reused = guard.is_some();
        if guard.is_none() {
            *guard = Some(self.connect()?);
        }
        let ch = match guard.as_ref().expect("connected above").open_channel(io) {
            Ok(ch) => ch,
            Err(e) if reused && e.is_unreachable() => {
                // A session that sat idle can be dropped on the way (firewalls, NAT). No command
                // was sent yet, so trying once more on a fresh connection is safe.
                let e = guard.as_ref().map_or(e.clone(), |c| c.explain(e));
                *guard = None;
                tracing::info!(host = %self.host.name, "cached session failed ({e}); reconnecting");
                let fresh = self.connect().map_err(|e2| {
                    tracing::warn!(host = %self.host.name, "reconnecting failed: {e2}");
                    // A bastion that is gone for good says more than the lost session did.
                    if matches!(e2, TransportError::Jump { .. }) {
                        e2
                    } else {
                        e.clone()
                    }
                })?;
                let ch = fresh.open_channel(io);
                *guard = Some(fresh);
                forget_if_broken(&mut guard, &ch);
                ch?
            }
            Err(e) => {
                let e = guard.as_ref().map_or(e.clone(), |c| c.explain(e));
                *guard = None;
                return Err(e);
            }
        };
        let conn = guard.as_mut().expect("connected above");
        let r = f(conn, ch).map_err(|e| conn.explain(e));
        forget_if_broken(&mut guard, &r);
        r
    }

    /// A line of this module's own, without the wrapper (probes, `$HOME`).
    fn raw(&self, line: &str) -> Result<ExecOutput, TransportError> {
        let cmd = Command::Shell(line.to_string());
        let abort = std::sync::atomic::AtomicBool::new(false);
        self.run_line(
            line,
            &ExecRequest::plain(&cmd, self.io_timeout(), 64 * 1024, &abort),
            false,
        )
    }

    /// The login user's home on the host (absolute), asked once per transport.
    fn home(&self) -> Result<String, TransportError> {
        let mut cached = crate::lock(&self.home);
        if let Some(h) = cached.as_ref() {
            return Ok(h.clone());
        }
        let out = self.raw("printf '%s' \"$HOME\"")?;
        let home = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.code != Some(0) || !home.starts_with('/') {
            return Err(TransportError::Other(format!(
                "cannot tell the login's home directory (got {home:?})"
            )));
        }
        *cached = Some(home.clone());
        Ok(home)
    }

    /// Whether sudo wants the password from this login: `sudo -n true` tells, once.
    fn sudo_mode(&self, b: &Become) -> Result<Sudo, TransportError> {
        if b.password.is_none() {
            return Ok(Sudo::NoPassword);
        }
        let mut cached = crate::lock(&self.sudo);
        if let Some(m) = *cached {
            return Ok(m);
        }
        let line = format!("sudo -n -u {} -- true", wrap::quote(&b.user)?);
        let out = self.raw(&line)?;
        let mode = if out.code == Some(0) {
            Sudo::NoPassword
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("password is required") {
                Sudo::Password
            } else {
                return Err(self.become_error(b, &line, &err));
            }
        };
        *cached = Some(mode);
        Ok(mode)
    }

    fn become_error(&self, b: &Become, command: &str, stderr: &str) -> TransportError {
        let first = stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("sudo failed")
            .trim();
        let hint = if first.contains("password is required") && b.password.is_none() {
            " (set become_password in the inventory, or allow NOPASSWD)"
        } else if stderr.contains("incorrect password") || first.starts_with("Sorry, try again") {
            " (the become_password is wrong)"
        } else {
            ""
        };
        TransportError::Become {
            login: self.host.user.clone(),
            user: b.user.clone(),
            command: command.chars().take(200).collect(),
            reason: format!("{first}{hint}"),
        }
    }

    /// Runs `req` on the script the session holds, when it serves and `req` can be served
    /// (`serve::request`); `None`: it cannot, and nothing was sent.
    fn try_serve(&self, req: &ExecRequest<'_>) -> Option<Result<ExecOutput, TransportError>> {
        let mut guard = crate::lock(&self.conn);
        let conn = guard.as_mut()?;
        if !conn.held.as_ref().is_some_and(|h| h.serves) {
            return None;
        }
        let keepalive = self.host.keepalive;
        // A session that sat idle may have been dropped on the way (firewalls, NAT) without a
        // word: a request written there could be lost or not, where a new channel's opening
        // tells, and a session lost before anything was sent is replaced (`on_channel`).
        if conn.last_used.get().elapsed() > keepalive.min(Duration::from_secs(15)) {
            return None;
        }
        let nonce = serve::nonce();
        let line = serve::request(req, &nonce)?;
        let mut held = conn.held.take().expect("checked above");
        if !conn.still_there(&mut held.ch) {
            // Its end has arrived already (a cut connection, the script gone): nothing was sent,
            // so the command goes on a session of its own, which replaces this one.
            tracing::debug!(host = %self.host.name, "the serving script is gone; a new session");
            *guard = None;
            return None;
        }
        let mut ends = serve::Ends::new(&nonce);
        let mut run = |conn: &mut Conn| {
            conn.sess.set_blocking(true);
            held.ch.write_all(line.as_bytes()).map_err(dropped)?;
            held.ch.flush().map_err(dropped)?;
            let (out, err, _) =
                conn.drain(&mut held.ch, req, keepalive, Until::Served(&mut ends))?;
            let (code, signal) = ends.outcome();
            Ok(collected(out, err, code, signal))
        };
        let r = run(conn).map_err(|e| conn.explain(e));
        if r.is_ok() {
            conn.held = Some(held);
        }
        // Lost with its script, the session is no use either: the next command reconnects.
        if r.is_err() {
            *guard = None;
        }
        Some(r)
    }

    fn exec_plain_login(&self, req: &ExecRequest<'_>) -> Result<ExecOutput, TransportError> {
        if let Some(r) = self.try_serve(req) {
            return r;
        }
        if req.bare && !wrap::needs_spec(req) {
            return self.run_line(&wrap::bare_line(req)?, req, false);
        }
        // A command that carries a secret is described in a 0600 file in the login user's home
        // (a relative SFTP path is the home), which the wrapper reads and removes.
        let spec = self.upload_spec(req)?;
        let line = wrap::remote_line(req, spec.as_deref())?;
        self.run_line(&line, req, wrap::holds_stdin(req, false))
    }

    fn upload_spec(&self, req: &ExecRequest<'_>) -> Result<Option<String>, TransportError> {
        if !wrap::needs_spec(req) {
            return Ok(None);
        }
        let name = format!(
            ".capstan-spec-{}-{}",
            std::process::id(),
            SPEC_SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let text = wrap::spec_text(req, TextShell::Login)?;
        self.upload(&name, &mut text.as_bytes(), text.len() as u64, 0o600)?;
        Ok(Some(name))
    }

    /// Runs the command through `sudo -u USER`: the wrapper (and so the command) as that user,
    /// its markers in the login's home; the password, when sudo wants it, first on stdin.
    fn exec_become(&self, req: &ExecRequest<'_>, b: &Become) -> Result<ExecOutput, TransportError> {
        let mode = self.sudo_mode(b)?;
        let spec = self.upload_spec(req)?;
        let line = wrap::become_line(req, spec.as_deref(), &b.user, mode == Sudo::Password)?;
        let mut stdin = Vec::new();
        let out = if mode == Sudo::Password {
            let pw = b.password.as_ref().expect("Password mode has a password");
            stdin.extend_from_slice(pw.expose().as_bytes());
            stdin.push(b'\n');
            stdin.extend_from_slice(req.stdin.unwrap_or_default());
            self.run_line(&line, &req.with_stdin(&stdin), false)
        } else {
            self.run_line(&line, req, wrap::holds_stdin(req, false))
        };
        stdin.fill(0);
        let out = out?;
        // sudo refused (exit 1, nothing run, its own message): the privilege's failure, not
        // the command's.
        let err = String::from_utf8_lossy(&out.stderr);
        if out.code == Some(1) && out.stdout.is_empty() && wrap::sudo_refused(&err) {
            return Err(self.become_error(b, &req.command.display(), &err));
        }
        Ok(out)
    }

    /// Writes `data` to `path` as the login user (temporary file beside it, then `mv`).
    fn upload(
        &self,
        path: &str,
        data: &mut dyn Read,
        size: u64,
        mode: i32,
    ) -> Result<(), TransportError> {
        let p = Path::new(path);
        let name = p
            .file_name()
            .ok_or_else(|| TransportError::Other(format!("not a file path: {path}")))?
            .to_string_lossy()
            .to_string();
        let dir = p
            .parent()
            .map(|d| d.to_string_lossy().to_string())
            .filter(|d| !d.is_empty());
        let tmp = match &dir {
            Some(d) => format!("{d}/.{name}.capstan-{}", std::process::id()),
            None => format!(".{name}.capstan-{}", std::process::id()),
        };
        self.send_file(&tmp, data, size, mode)?;
        // rename(2) on the host: atomic, and works where SFTP rename refuses to overwrite.
        let cmd = Command::Argv(vec![
            "mv".into(),
            "-f".into(),
            "--".into(),
            tmp.clone(),
            path.to_string(),
        ]);
        let abort = std::sync::atomic::AtomicBool::new(false);
        let out = self.exec_plain_login(
            &ExecRequest::plain(&cmd, self.io_timeout(), 64 * 1024, &abort).without_wrapper(),
        )?;
        if out.code != Some(0) {
            return Err(TransportError::Other(format!(
                "cannot move upload into place at {path}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// SFTP (or scp where the host has no SFTP subsystem) of `data` to `path`, as the login.
    fn send_file(
        &self,
        path: &str,
        data: &mut dyn Read,
        size: u64,
        mode: i32,
    ) -> Result<(), TransportError> {
        let io = self.io_timeout();
        self.with_conn(|c| {
            c.sess.set_blocking(true);
            let failed = |e: String| TransportError::Other(format!("cannot write {path}: {e}"));
            match c.sess.sftp() {
                Ok(sftp) => {
                    let mut f = sftp
                        .open_mode(
                            Path::new(path),
                            ssh2::OpenFlags::WRITE
                                | ssh2::OpenFlags::CREATE
                                | ssh2::OpenFlags::TRUNCATE,
                            mode,
                            ssh2::OpenType::File,
                        )
                        .map_err(|e| failed(e.message().to_string()))?;
                    std::io::copy(data, &mut f).map_err(|e| failed(e.to_string()))?;
                }
                Err(e) => {
                    // Hardened hosts may lack the sftp subsystem; scp needs only a shell.
                    tracing::debug!("sftp unavailable ({}), using scp", e.message());
                    let mut ch = c
                        .sess
                        .scp_send(Path::new(path), mode, size, None)
                        .map_err(|e| c.blocking_err(e, io))?;
                    std::io::copy(data, &mut ch).map_err(|e| failed(e.to_string()))?;
                    ch.send_eof().map_err(|e| failed(e.message().to_string()))?;
                    ch.wait_eof().map_err(|e| failed(e.message().to_string()))?;
                    ch.close().map_err(|e| failed(e.message().to_string()))?;
                    ch.wait_close()
                        .map_err(|e| failed(e.message().to_string()))?;
                }
            }
            Ok(())
        })
    }
}

impl Transport for SshTransport {
    fn reach(&self) -> Result<(), TransportError> {
        // The session is kept for the run's commands: connecting is the whole check.
        self.with_conn(|_| Ok(()))
    }

    /// A bare command of the login's own (no `become`, no secret, no input) is kept on its
    /// channel once it says `ready`, its stdin open; it ends with the session otherwise.
    fn exec_held(
        &self,
        req: &ExecRequest<'_>,
        ready: &str,
    ) -> Result<(ExecOutput, bool), TransportError> {
        if self.host.become_.is_some() || !req.bare || wrap::needs_spec(req) || req.stdin.is_some()
        {
            return self.exec(req).map(|o| (o, false));
        }
        let line = wrap::bare_line(req)?;
        let keepalive = self.host.keepalive;
        let io = self.io_timeout();
        self.on_channel(|conn, mut ch| {
            // Its stdin stays open: what it waits for comes there later (`finish_held`).
            conn.start(&mut ch, &line, req, true, io)?;
            let (out, err, ready) = conn.drain(&mut ch, req, keepalive, Until::Line(ready))?;
            if !ready {
                return conn.end(ch, out, err, true, io).map(|o| (o, false));
            }
            // One kept per session: a command kept before ends now (its stdin closes).
            let serves = out
                .buf
                .split(|&b| b == b'\n')
                .any(|l| l == serve::HELLO.as_bytes());
            conn.held = Some(Held { ch, serves });
            Ok((collected(out, err, None, None), true))
        })
    }

    fn finish_held(
        &self,
        input: &[u8],
        answer: &str,
        timeout: Duration,
    ) -> Option<Result<ExecOutput, TransportError>> {
        let mut guard = crate::lock(&self.conn);
        let conn = guard.as_mut()?;
        let Held { mut ch, .. } = conn.held.take()?;
        let keepalive = self.host.keepalive;
        let io = self.io_timeout();
        let never = std::sync::atomic::AtomicBool::new(false);
        let nothing = Command::Shell(String::new());
        let req = ExecRequest::plain(&nothing, timeout, 64 * 1024, &never);
        let finish = |conn: &mut Conn| {
            conn.sess.set_blocking(true);
            ch.write_all(input).map_err(dropped)?;
            ch.send_eof().map_err(|e| conn.blocking_err(e, io))?;
            let (out, err, answered) = conn.drain(&mut ch, &req, keepalive, Until::Line(answer))?;
            if answered {
                // The channel closes when the script has ended, unless a process it served
                // still holds its stdout: the answer is what was waited for, and the channel is
                // let go without waiting for its close (freeing it in blocking mode would).
                conn.sess.set_blocking(false);
                drop(ch);
                conn.sess.set_blocking(true);
                return Ok(collected(out, err, None, None));
            }
            conn.end(ch, out, err, false, io)
        };
        let r = finish(conn).map_err(|e| conn.explain(e));
        forget_if_broken(&mut guard, &r);
        Some(r)
    }

    fn exec(&self, req: &ExecRequest<'_>) -> Result<ExecOutput, TransportError> {
        match &self.host.become_ {
            Some(b) => self.exec_become(req, b),
            None => self.exec_plain_login(req),
        }
    }

    fn put(
        &self,
        path: &str,
        data: &mut dyn Read,
        size: u64,
        mode: i32,
    ) -> Result<(), TransportError> {
        let Some(b) = &self.host.become_ else {
            return self.upload(path, data, size, mode);
        };
        // The login may not write there: the bytes go to its home first (0600), then the
        // become user copies them beside the target, gives them the mode asked and the owner of
        // the file they replace, and renames them into place.
        let staged = format!(
            "{}/.capstan-upload-{}-{}",
            self.home()?,
            std::process::id(),
            SPEC_SEQ.fetch_add(1, Ordering::SeqCst)
        );
        self.send_file(&staged, data, size, 0o600)?;
        let cmd = Command::Argv(vec![
            "sh".into(),
            "-c".into(),
            wrap::PLACE.into(),
            "capstan-place".into(),
            staged.clone(),
            path.to_string(),
            format!("{mode:o}"),
        ]);
        let abort = std::sync::atomic::AtomicBool::new(false);
        let out = self.exec_become(
            &ExecRequest::plain(&cmd, self.io_timeout(), 64 * 1024, &abort),
            b,
        );
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                let _ = self.raw(&format!("rm -f {}", wrap::quote(&staged)?));
                return Err(e);
            }
        };
        if out.code != Some(0) {
            let _ = self.raw(&format!("rm -f {}", wrap::quote(&staged)?));
            return Err(TransportError::Other(format!(
                "cannot put the upload into place at {path} as {}: {}",
                b.user,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }
}
