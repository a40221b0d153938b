//! Bastions: one SSH session per jump host, shared by every host behind it; each host's own session rides a `direct-tcpip` channel that the bastion's thread pumps.
//!
//! A libssh2 session is not safe to drive from several threads at once, and a blocking read on
//! one channel would hold up the others. So each bastion's session belongs to one thread, in
//! non-blocking mode. A host behind it gets one end of a Unix socket pair; the thread copies
//! between the other end and the host's channel, and opens channels on request. The host's
//! session (libssh2 again) runs over its end as over TCP: host key check, login and keepalives
//! are the host's own, end to end.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use ssh2::{BlockDirections, Channel, Session};

use super::ssh::{code_of, establish, tcp_connect, Endpoint, Stream, LIBSSH2_ERROR_EAGAIN};
use super::TransportError;
use crate::inventory::Hop;

/// libssh2's answer when the server refused to open a channel (the target refused or is down).
const LIBSSH2_ERROR_CHANNEL_FAILURE: i32 = -21;
/// Bytes held for a slow reader before the pump stops reading its other side.
const HIGH_WATER: usize = 256 * 1024;

/// The bastion sessions of a run, by chain (`user@b1:22>user@b2:22`): one per chain, opened
/// when the first host behind it connects, opened again after it is lost.
#[derive(Default)]
pub struct JumpPool {
    sessions: Mutex<HashMap<String, Arc<JumpSession>>>,
}

impl std::fmt::Debug for JumpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JumpPool")
    }
}

impl JumpPool {
    /// The session to the last of `hops`, through the ones before it.
    pub(super) fn session(&self, hops: &[Hop]) -> Result<Arc<JumpSession>, TransportError> {
        // Held while connecting: hosts behind one bastion that connect at once share the
        // session the first of them opens, instead of each opening its own.
        let mut map = crate::lock(&self.sessions);
        let mut via: Option<Arc<JumpSession>> = None;
        for i in 0..hops.len() {
            let key = hops[..=i]
                .iter()
                .map(Hop::key)
                .collect::<Vec<_>>()
                .join(">");
            let s = match map.get(&key).filter(|s| s.failure().is_none()) {
                Some(s) => s.clone(),
                None => {
                    let s = JumpSession::connect(&hops[i], via.take())?;
                    map.insert(key, s.clone());
                    s
                }
            };
            via = Some(s);
        }
        Ok(via.expect("a jump chain has at least one hop"))
    }
}

/// A request to the pump thread: open a channel to `host:port` and hand back our end of it.
struct Open {
    host: String,
    port: u16,
    reply: mpsc::SyncSender<Result<UnixStream, String>>,
}

/// One bastion's session, driven by its own thread.
pub(super) struct JumpSession {
    /// `ops@bastion:2222` (and the hop as written, when it differs), for messages.
    pub label: String,
    requests: Mutex<mpsc::Sender<Open>>,
    /// Written to wake the thread when a request is queued.
    wake: UnixStream,
    /// Why the session is gone, once it is.
    failed: Arc<Mutex<Option<String>>>,
    timeout: Duration,
    /// The bastion before this one: it carries this session's connection.
    _via: Option<Arc<JumpSession>>,
}

impl JumpSession {
    fn connect(hop: &Hop, via: Option<Arc<JumpSession>>) -> Result<Arc<Self>, TransportError> {
        let ep = Endpoint::of_hop(hop);
        // The alias too, when the hop was written as one (`bast1 (ops@10.0.0.5:22)`).
        let written = hop.spec.strip_prefix("ssh://").unwrap_or(&hop.spec);
        let written = written.rsplit_once('@').map_or(written, |(_, h)| h);
        let label = if written.starts_with('[')
            || written.split(':').next() == Some(hop.address.as_str())
        {
            hop.key()
        } else {
            format!("{} ({})", hop.spec, hop.key())
        };
        let jump_err = |e: TransportError| match e {
            e @ TransportError::Jump { .. } => e,
            e => TransportError::Jump {
                bastion: label.clone(),
                reason: e.to_string(),
            },
        };
        let stream = match &via {
            None => Stream::Tcp(tcp_connect(&ep).map_err(jump_err)?),
            Some(v) => Stream::Unix(v.tunnel(&ep).map_err(jump_err)?),
        };
        let (sess, socket) = establish(&ep, stream).map_err(jump_err)?;
        let (tx, rx) = mpsc::channel();
        let (wake, wake_rx) =
            UnixStream::pair().map_err(|e| jump_err(TransportError::Other(e.to_string())))?;
        let failed = Arc::new(Mutex::new(None));
        let pump = Pump {
            sess,
            socket,
            requests: rx,
            wake: wake_rx,
            failed: failed.clone(),
            keepalive: ep.keepalive,
            io_timeout: ep.io_timeout(),
            forwards: Vec::new(),
        };
        std::thread::Builder::new()
            .name(format!("jump {label}"))
            .spawn(move || pump.run())
            .map_err(|e| jump_err(TransportError::Other(e.to_string())))?;
        Ok(Arc::new(JumpSession {
            label,
            requests: Mutex::new(tx),
            wake,
            failed,
            timeout: ep.io_timeout(),
            _via: via,
        }))
    }

    /// Why the session was lost, if it was.
    pub(super) fn failure(&self) -> Option<String> {
        crate::lock(&self.failed).clone()
    }

    /// A connection to `ep` through this bastion: our end of the channel's socket pair.
    pub(super) fn tunnel(&self, ep: &Endpoint<'_>) -> Result<UnixStream, TransportError> {
        if let Some(why) = self.failure() {
            return Err(self.lost(&why));
        }
        let (reply, answer) = mpsc::sync_channel(1);
        let sent = crate::lock(&self.requests).send(Open {
            host: ep.address.to_string(),
            port: ep.port,
            reply,
        });
        if sent.is_err() {
            return Err(self.lost("its session ended"));
        }
        let _ = (&self.wake).write(&[1]);
        match answer.recv_timeout(self.timeout + Duration::from_secs(1)) {
            Ok(Ok(s)) => Ok(s),
            // The bastion answered, the host behind it did not: that is the host's failure.
            Ok(Err(why)) => Err(TransportError::Connect {
                addr: ep.addr(),
                reason: format!("through bastion {}: {why}", self.label),
            }),
            Err(_) => Err(self.lost(
                &self
                    .failure()
                    .unwrap_or_else(|| "it did not open a channel in time".into()),
            )),
        }
    }

    fn lost(&self, why: &str) -> TransportError {
        TransportError::Jump {
            bastion: self.label.clone(),
            reason: format!("the connection to the bastion was lost: {why}"),
        }
    }

    /// An error of a host behind this bastion, told as the bastion's when the bastion is gone.
    pub(super) fn explain(&self, e: TransportError) -> TransportError {
        match self.failure() {
            Some(why) if !matches!(e, TransportError::Jump { .. }) => self.lost(&why),
            _ => e,
        }
    }
}

/// The thread that owns a bastion's session.
struct Pump {
    sess: Session,
    socket: Stream,
    requests: mpsc::Receiver<Open>,
    wake: UnixStream,
    failed: Arc<Mutex<Option<String>>>,
    keepalive: Duration,
    io_timeout: Duration,
    forwards: Vec<Forward>,
}

/// One host's connection through the bastion.
struct Forward {
    ch: Channel,
    sock: UnixStream,
    /// Read from the host side, not yet accepted by the channel.
    to_ch: Vec<u8>,
    /// Read from the channel, not yet accepted by the host side.
    to_sock: Vec<u8>,
    sock_eof: bool,
    eof_sent: bool,
    ch_eof: bool,
    sock_shut: bool,
    done: bool,
}

impl Pump {
    fn run(mut self) {
        self.sess.set_blocking(false);
        let _ = self.wake.set_nonblocking(true);
        let mut buf = vec![0u8; 32 * 1024];
        let mut next_keepalive = Instant::now() + self.keepalive;
        loop {
            let mut closed = false;
            let mut byte = [0u8; 64];
            loop {
                match (&self.wake).read(&mut byte) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            loop {
                match self.requests.try_recv() {
                    Ok(open) => {
                        if let Err(why) = self.open(open) {
                            return self.fail(why);
                        }
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            // Nobody can ask for a channel any more and none is open: the session ends.
            if closed && self.forwards.is_empty() {
                let _ = self.sess.disconnect(None, "capstan is done", None);
                return;
            }
            let mut progressed = false;
            let mut channel_error = false;
            for f in &mut self.forwards {
                match f.step(&mut buf) {
                    Ok(p) => progressed |= p,
                    Err(_) => {
                        f.done = true;
                        channel_error = true;
                    }
                }
            }
            if channel_error {
                if let Some(why) = self.dead() {
                    return self.fail(why);
                }
            }
            self.forwards.retain(|f| !f.done);
            if Instant::now() >= next_keepalive {
                match self.sess.keepalive_send() {
                    Ok(secs) => {
                        next_keepalive =
                            Instant::now() + Duration::from_secs(u64::from(secs.max(1)))
                    }
                    Err(e) if code_of(&e) == LIBSSH2_ERROR_EAGAIN => {}
                    Err(e) => return self.fail(e.message().to_string()),
                }
            }
            if !progressed {
                let wait = next_keepalive
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1));
                if let Some(why) = self.wait(wait) {
                    return self.fail(why);
                }
            }
        }
    }

    /// Opens a channel to the host asked for. Blocking for the one round trip it takes: the
    /// other channels' data waits in libssh2's queues meanwhile.
    fn open(&mut self, open: Open) -> Result<(), String> {
        self.sess.set_blocking(true);
        self.sess
            .set_timeout(self.io_timeout.as_millis().min(u32::MAX as u128) as u32);
        let r = self.sess.channel_direct_tcpip(&open.host, open.port, None);
        self.sess.set_blocking(false);
        match r {
            Ok(ch) => {
                let (ours, theirs) = UnixStream::pair().map_err(|e| e.to_string())?;
                let _ = ours.set_nonblocking(true);
                self.forwards.push(Forward {
                    ch,
                    sock: ours,
                    to_ch: Vec::new(),
                    to_sock: Vec::new(),
                    sock_eof: false,
                    eof_sent: false,
                    ch_eof: false,
                    sock_shut: false,
                    done: false,
                });
                let _ = open.reply.send(Ok(theirs));
                Ok(())
            }
            Err(e) if code_of(&e) == LIBSSH2_ERROR_CHANNEL_FAILURE => {
                let _ = open.reply.send(Err(format!(
                    "the bastion could not connect to {}:{} ({})",
                    open.host,
                    open.port,
                    e.message()
                )));
                Ok(())
            }
            Err(e) => {
                let why = e.message().to_string();
                let _ = open.reply.send(Err(why.clone()));
                Err(why)
            }
        }
    }

    /// Whether the bastion's connection is gone, and why.
    fn dead(&self) -> Option<String> {
        let mut fds = [PollFd::new(&self.socket, PollFlags::RDHUP)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0) {
            return Some("the bastion closed the connection".into());
        }
        match self.sess.keepalive_send() {
            Err(e) if code_of(&e) != LIBSSH2_ERROR_EAGAIN => Some(e.message().to_string()),
            _ => None,
        }
    }

    /// Waits up to `timeout` for anything to do; `Some` when the bastion's connection ended.
    fn wait(&self, timeout: Duration) -> Option<String> {
        let mut session = PollFlags::RDHUP;
        // With no channel open nobody reads the session's socket: waiting for it to be
        // readable would spin on a keepalive reply. Only its hang-up matters then.
        if !self.forwards.is_empty() {
            session |= PollFlags::IN;
        }
        if matches!(
            self.sess.block_directions(),
            BlockDirections::Outbound | BlockDirections::Both
        ) {
            session |= PollFlags::OUT;
        }
        let mut fds = vec![
            PollFd::new(&self.socket, session),
            PollFd::new(&self.wake, PollFlags::IN),
        ];
        for f in &self.forwards {
            let mut ev = PollFlags::empty();
            if f.to_ch.is_empty() && !f.sock_eof {
                ev |= PollFlags::IN;
            }
            if !f.to_sock.is_empty() {
                ev |= PollFlags::OUT;
            }
            fds.push(PollFd::new(&f.sock, ev));
        }
        let t = Timespec {
            tv_sec: timeout.as_secs() as _,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        if matches!(poll(&mut fds, Some(&t)), Ok(n) if n > 0)
            && fds[0]
                .revents()
                .intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR)
            && self.forwards.is_empty()
        {
            return Some("the bastion closed the connection".into());
        }
        None
    }

    /// Records why the session ended, then closes every host's connection through it (the
    /// hosts' sessions see the end of their stream and ask `failure` why).
    fn fail(mut self, why: String) {
        tracing::warn!("a bastion's session ended: {why}");
        *crate::lock(&self.failed) = Some(why.clone());
        for f in self.forwards.drain(..) {
            let _ = f.sock.shutdown(std::net::Shutdown::Both);
        }
        while let Ok(open) = self.requests.try_recv() {
            let _ = open.reply.send(Err(why.clone()));
        }
    }
}

impl Forward {
    /// Moves what can move without waiting, both ways; whether anything did. An error is the
    /// channel's (or the session's: the caller tells which).
    fn step(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        use std::io::ErrorKind::WouldBlock;
        let mut moved = false;
        // Host side → channel.
        if self.to_ch.is_empty() && !self.sock_eof {
            match self.sock.read(buf) {
                Ok(0) => {
                    self.sock_eof = true;
                    moved = true;
                }
                Ok(n) => {
                    self.to_ch.extend_from_slice(&buf[..n]);
                    moved = true;
                }
                Err(e) if e.kind() == WouldBlock => {}
                Err(_) => self.sock_eof = true,
            }
        }
        while !self.to_ch.is_empty() {
            match self.ch.write(&self.to_ch) {
                Ok(0) => break,
                Ok(n) => {
                    self.to_ch.drain(..n);
                    moved = true;
                }
                Err(e) if e.kind() == WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.sock_eof && self.to_ch.is_empty() && !self.eof_sent {
            match self.ch.send_eof() {
                Ok(()) => {
                    self.eof_sent = true;
                    moved = true;
                }
                Err(e) if code_of(&e) == LIBSSH2_ERROR_EAGAIN => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Channel → host side, while the host keeps up.
        while self.to_sock.len() < HIGH_WATER && !self.ch_eof {
            match self.ch.read(buf) {
                Ok(0) => {
                    self.ch_eof = self.ch.eof();
                    break;
                }
                Ok(n) => {
                    self.to_sock.extend_from_slice(&buf[..n]);
                    moved = true;
                }
                Err(e) if e.kind() == WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if !self.ch_eof && self.ch.eof() {
            self.ch_eof = true;
            moved = true;
        }
        let mut host_gone = false;
        while !self.to_sock.is_empty() {
            match self.sock.write(&self.to_sock) {
                Ok(n) => {
                    self.to_sock.drain(..n);
                    moved = true;
                }
                Err(e) if e.kind() == WouldBlock => break,
                Err(_) => {
                    host_gone = true;
                    self.to_sock.clear();
                    break;
                }
            }
        }
        if self.ch_eof && self.to_sock.is_empty() && !self.sock_shut {
            let _ = self.sock.shutdown(std::net::Shutdown::Write);
            self.sock_shut = true;
            moved = true;
        }
        if host_gone
            || (self.sock_eof && self.ch_eof && self.to_sock.is_empty() && self.to_ch.is_empty())
        {
            // Closing is a courtesy to the bastion; dropping the channel frees it either way.
            let _ = self.ch.close();
            self.done = true;
            moved = true;
        }
        Ok(moved)
    }
}
