//! `LocalTransport`: processes on this machine, with timeouts and bounded, deadlock-free capture.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::wrap::{self, TextShell};
use super::{
    signal_name, Command, ExecOutput, ExecRequest, OutputSink, Tail, Transport, TransportError,
};

/// Runs commands as child processes of capstan.
#[derive(Debug, Default)]
pub struct LocalTransport;

impl LocalTransport {
    pub fn new() -> Self {
        LocalTransport
    }
}

/// After the command exits, how long to wait for its pipes to close. A daemon started in the
/// background inherits them and may never close them; its output is not the command's.
const PIPE_GRACE: Duration = Duration::from_millis(300);

/// Drains a pipe on its own thread. The output so far stays readable through the shared tail
/// even when the pipe never closes.
struct Reader {
    tail: Arc<Mutex<Tail>>,
    done: mpsc::Receiver<()>,
}

impl Reader {
    fn start(
        mut r: impl Read + Send + 'static,
        max: usize,
        stream: &'static str,
        sink: Option<OutputSink>,
    ) -> Reader {
        let tail = Arc::new(Mutex::new(Tail::new(max)));
        let (tx, done) = mpsc::channel();
        let t = tail.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 64 * 1024];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Some(s) = &sink {
                            s(stream, &buf[..n]);
                        }
                        crate::lock(&t).push(&buf[..n])
                    }
                }
            }
            let _ = tx.send(());
        });
        Reader { tail, done }
    }

    /// Waits up to `grace` for the pipe to close, then takes what was read.
    fn finish(self, grace: Duration) -> Tail {
        let _ = self.done.recv_timeout(grace);
        std::mem::take(&mut *crate::lock(&self.tail))
    }
}

/// Writes a spec file readable by this user only, in the temporary directory.
fn write_spec(text: &str) -> Result<std::path::PathBuf, TransportError> {
    use std::os::unix::fs::OpenOptionsExt;
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "capstan-spec-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| TransportError::Other(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| TransportError::Other(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

/// Kills the process group the child leads (it was spawned with `process_group(0)`).
fn kill_group(pid: u32) {
    use rustix::process::{kill_process_group, Pid, Signal};
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        // Already gone is fine: there is nothing left to kill.
        let _ = kill_process_group(pid, Signal::KILL);
    }
}

impl Transport for LocalTransport {
    fn exec(&self, req: &ExecRequest<'_>) -> Result<ExecOutput, TransportError> {
        let program = match req.command {
            Command::Argv(argv) => match argv.first() {
                Some(first) => first.clone(),
                None => return Err(TransportError::Other("empty argv".into())),
            },
            Command::Shell(_) => "sh".to_string(),
        };
        // The wrapper (see `wrap`) runs the command and ends it when capstan goes away. A command
        // that carries a secret is described in a 0600 file it reads and removes.
        let spec = if wrap::needs_spec(req) {
            Some(write_spec(&wrap::spec_text(req, TextShell::Sh)?)?)
        } else {
            None
        };
        let spec_arg = spec.as_ref().map(|p| p.display().to_string());
        // By absolute path: the PATH the command sees may lack `sh` (it is the command's to fail).
        let mut cmd = std::process::Command::new("/bin/sh");
        match req.command {
            // capstan's own brief command: as it is, no watcher (see `ExecRequest::bare`).
            Command::Argv(argv) if req.bare && spec.is_none() => {
                cmd = std::process::Command::new(&argv[0]);
                cmd.args(&argv[1..]);
            }
            Command::Shell(text) if req.bare && spec.is_none() => {
                cmd.arg("-c").arg(text);
            }
            _ => {
                cmd.arg("-c")
                    .arg(wrap::WRAPPER)
                    .arg("capstan-wrap")
                    .args(wrap::wrapper_args(req, spec_arg.as_deref(), TextShell::Sh));
            }
        }
        if spec.is_none() {
            cmd.envs(req.env);
            if let Some(dir) = req.cwd {
                cmd.current_dir(dir);
            }
        }
        cmd.stdin(if req.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills the children it started too.
        .process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            if let Some(p) = &spec {
                let _ = std::fs::remove_file(p);
            }
            TransportError::Spawn {
                program: program.clone(),
                reason: e.to_string(),
            }
        })?;
        let pid = child.id();
        if let (Some(data), Some(mut stdin)) = (req.stdin, child.stdin.take()) {
            let data = data.to_vec();
            thread::spawn(move || {
                let _ = stdin.write_all(&data);
            });
        }
        let out_r = Reader::start(
            child.stdout.take().expect("stdout is piped"),
            req.max_output,
            "stdout",
            req.on_output.clone(),
        );
        let err_r = Reader::start(
            child.stderr.take().expect("stderr is piped"),
            req.max_output,
            "stderr",
            req.on_output.clone(),
        );
        let (done_tx, done_rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = done_tx.send(child.wait());
        });
        let start = Instant::now();
        let status = loop {
            let slice = Duration::from_millis(100).min(req.timeout.saturating_sub(start.elapsed()));
            match done_rx.recv_timeout(slice) {
                Ok(st) => break st.map_err(|e| TransportError::Other(e.to_string()))?,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(TransportError::Other("lost the child process".into()))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if req.abort.load(Ordering::SeqCst) {
                kill_group(pid);
                return Err(TransportError::Aborted);
            }
            if start.elapsed() >= req.timeout {
                kill_group(pid);
                let _ = done_rx.recv_timeout(Duration::from_secs(2));
                let partial = ExecOutput {
                    code: None,
                    signal: Some("KILL".into()),
                    stdout: out_r.finish(PIPE_GRACE).buf,
                    stderr: err_r.finish(PIPE_GRACE).buf,
                    truncated: false,
                };
                return Err(TransportError::CommandTimeout {
                    secs: req.timeout.as_secs_f64(),
                    partial: Box::new(partial),
                });
            }
        };
        let out = out_r.finish(PIPE_GRACE);
        let err = err_r.finish(PIPE_GRACE);
        Ok(ExecOutput {
            code: status.code(),
            signal: status.signal().map(signal_name),
            truncated: out.truncated || err.truncated,
            stdout: out.buf,
            stderr: err.buf,
        })
    }

    fn put(
        &self,
        path: &str,
        data: &mut dyn Read,
        _size: u64,
        mode: i32,
    ) -> Result<(), TransportError> {
        let dst = std::path::Path::new(path);
        let dir = dst
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let name = dst
            .file_name()
            .ok_or_else(|| TransportError::Other(format!("not a file path: {path}")))?;
        let tmp = dir.join(format!(
            ".{}.capstan-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let io = |e: std::io::Error| TransportError::Other(format!("cannot write {path}: {e}"));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::copy(data, &mut f)?;
            f.sync_all()?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode as u32))?;
            std::fs::rename(&tmp, dst)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }
}
