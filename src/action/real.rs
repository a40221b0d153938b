//! The real backend: actions performed through a host's transport, its shell for backups, and the helper scripts.

use super::*;

impl Executor {
    pub(super) fn transport_fault(&self, host: &HostEntry, e: TransportError) -> Fault {
        let kind = match &e {
            TransportError::CommandTimeout { .. } => FaultKind::Timeout,
            TransportError::Aborted => FaultKind::Interrupted,
            e if e.is_unreachable() => FaultKind::Unreachable,
            _ => FaultKind::Action,
        };
        let mut msg = format!("{}: {e}", host.name);
        if let TransportError::CommandTimeout { partial, .. } = &e {
            let tail = last_lines(&partial.stderr, 5);
            if !tail.is_empty() {
                msg.push_str(&format!("; last stderr:\n{tail}"));
            }
        }
        let f = Fault::new(kind, Some(&host.name), self.inventory.redactor.redact(&msg));
        match e {
            TransportError::Spawn { .. } => f.with_reason("spawn"),
            _ => f,
        }
    }

    /// Runs a helper command (argv) for a file primitive and returns its output when it exits 0.
    pub(super) fn helper(
        &self,
        host: &HostEntry,
        t: &dyn Transport,
        argv: &[&str],
        what: &str,
    ) -> Result<ExecOutput, Fault> {
        let cmd = Command::Argv(argv.iter().map(|s| s.to_string()).collect());
        let out = self.exec_plain(host, t, &cmd, MAX_READ)?;
        if out.code == Some(0) {
            Ok(out)
        } else {
            Err(Fault::new(
                FaultKind::Action,
                Some(&host.name),
                format!(
                    "{}: {what} failed: {}",
                    host.name,
                    last_lines(&out.stderr, 3)
                ),
            ))
        }
    }

    /// A helper command: no env, cwd, stdin or live output; the host's command timeout.
    pub(super) fn exec_plain(
        &self,
        host: &HostEntry,
        t: &dyn Transport,
        cmd: &Command,
        max_output: usize,
    ) -> Result<ExecOutput, Fault> {
        self.exec_on(
            host,
            t,
            cmd,
            &BTreeMap::new(),
            None,
            None,
            None,
            max_output,
            None,
            None,
        )
    }

    /// capstan's own brief command (`test -e`, `true`, clearing markers), without the wrapper:
    /// it ends by itself at once, so a watcher beside it would only cost the host a process
    /// (`ExecRequest::bare`).
    pub(super) fn exec_brief(
        &self,
        host: &HostEntry,
        t: &dyn Transport,
        cmd: &Command,
        max_output: usize,
    ) -> Result<ExecOutput, Fault> {
        let mut req = ExecRequest::plain(
            cmd,
            host.command_timeout,
            max_output,
            self.cancel.abort_flag(),
        )
        .without_wrapper();
        req.sensitive = self.inventory.redactor.contains_secret(&cmd.display());
        t.exec(&req).map_err(|e| self.transport_fault(host, e))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn exec_on(
        &self,
        host: &HostEntry,
        t: &dyn Transport,
        command: &Command,
        env: &BTreeMap<String, String>,
        cwd: Option<&str>,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
        max_output: usize,
        on_output: Option<transport::OutputSink>,
        extra: Option<(&BTreeMap<String, String>, Option<&str>)>,
    ) -> Result<ExecOutput, Fault> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        let (secret_files, marker) = extra.unwrap_or((&NONE, None));
        let red = &self.inventory.redactor;
        let sensitive = red.contains_secret(&command.display())
            || env.values().any(|v| red.contains_secret(v))
            || cwd.is_some_and(|c| red.contains_secret(c));
        t.exec(&ExecRequest {
            command,
            env,
            cwd,
            stdin,
            timeout: timeout.unwrap_or(host.command_timeout),
            max_output,
            abort: self.cancel.abort_flag(),
            on_output,
            marker,
            sensitive,
            secret_files,
            bare: false,
        })
        .map_err(|e| self.transport_fault(host, e))
    }

    pub(super) fn perform_real(
        &self,
        host: &HostEntry,
        action: &Action,
        marker: Option<&str>,
    ) -> Result<Outcome, Fault> {
        let t = self.transport_as(host, action.become_user())?;
        let action = action.inner();
        if let Action::WaitPort { port, timeout } = action {
            return self.wait_port_real(host, *port, *timeout);
        }
        let t = t.as_ref();
        let fault = |m: String| {
            Fault::new(
                FaultKind::Action,
                Some(&host.name),
                format!("{}: {m}", host.name),
            )
        };
        match action {
            Action::Exec {
                command,
                env,
                cwd,
                stdin,
                timeout,
                secret_files,
                ..
            } => {
                let (live, sink) = self.live_output(host);
                let out = self.exec_on(
                    host,
                    t,
                    command,
                    env,
                    cwd.as_deref(),
                    stdin.as_deref(),
                    *timeout,
                    MAX_OUTPUT,
                    Some(sink),
                    Some((secret_files, marker)),
                );
                live.finish();
                out.map(Outcome::Exec)
            }
            Action::ReadFile { path } => {
                let out = self.helper(host, t, &["cat", "--", path], &format!("read {path}"))?;
                if out.truncated {
                    return Err(fault(format!(
                        "{path} is larger than {} MiB",
                        MAX_READ >> 20
                    )));
                }
                Ok(Outcome::Bytes(out.stdout))
            }
            Action::Exists { path } => {
                // Bare, the login shell's builtin `test` answers: no program started on the
                // host. Under `become` the text would go to the become user's shell (maybe
                // nologin): the program then.
                let cmd = if host.become_.is_none() {
                    let quoted =
                        transport::wrap::quote(path).map_err(|e| self.transport_fault(host, e))?;
                    Command::Shell(format!("test -e {quoted}"))
                } else {
                    Command::Argv(vec!["test".into(), "-e".into(), path.clone()])
                };
                let out = self.exec_brief(host, t, &cmd, 4096)?;
                Ok(Outcome::Bool(out.code == Some(0)))
            }
            Action::Checksum { path } => {
                let out = self.helper(
                    host,
                    t,
                    &["sha256sum", "--", path],
                    &format!("checksum of {path}"),
                )?;
                let text = String::from_utf8_lossy(&out.stdout);
                let sum = text
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                if sum.len() != 64 {
                    return Err(fault(format!("unexpected sha256sum output: {text}")));
                }
                Ok(Outcome::Text(sum))
            }
            Action::FreeSpace { path } => {
                let out =
                    self.helper(host, t, &["df", "-Pk", "--", path], &format!("df {path}"))?;
                let text = String::from_utf8_lossy(&out.stdout);
                parse_df(&text)
                    .map(Outcome::Int)
                    .ok_or_else(|| fault(format!("unexpected df output: {text}")))
            }
            Action::DiskUsage { path } => {
                let out =
                    self.helper(host, t, &["du", "-sk", "--", path], &format!("du {path}"))?;
                let text = String::from_utf8_lossy(&out.stdout);
                text.split_whitespace()
                    .next()
                    .and_then(|k| k.parse::<i64>().ok())
                    .map(|k| Outcome::Int(k * 1024))
                    .ok_or_else(|| fault(format!("unexpected du output: {text}")))
            }
            Action::WriteFile {
                path,
                content,
                mode,
            } => t
                .put(path, &mut content.as_slice(), content.len() as u64, *mode)
                .map(|_| Outcome::Unit)
                .map_err(|e| self.transport_fault(host, e)),
            Action::Mkdir { path } => {
                self.helper(
                    host,
                    t,
                    &["mkdir", "-p", "--", path],
                    &format!("mkdir {path}"),
                )?;
                Ok(Outcome::Unit)
            }
            Action::Copy { from, to } => {
                self.helper(
                    host,
                    t,
                    &["cp", "-a", "--", from, to],
                    &format!("copy {from} to {to}"),
                )?;
                Ok(Outcome::Unit)
            }
            Action::Move { from, to } => {
                self.helper(
                    host,
                    t,
                    &["mv", "--", from, to],
                    &format!("move {from} to {to}"),
                )?;
                Ok(Outcome::Unit)
            }
            Action::Remove { path } => {
                self.helper(
                    host,
                    t,
                    &["rm", "-rf", "--", path],
                    &format!("remove {path}"),
                )?;
                Ok(Outcome::Unit)
            }
            Action::ReplaceDir {
                target,
                source,
                keep,
            } => {
                self.helper(
                    host,
                    t,
                    &[
                        "sh",
                        "-c",
                        REPLACE_DIR_SH,
                        "capstan-replace-dir",
                        source,
                        target,
                        keep.as_deref().unwrap_or(""),
                    ],
                    &format!("replace {target}"),
                )?;
                Ok(Outcome::Unit)
            }
            Action::Restore { target, saved } => {
                self.helper(
                    host,
                    t,
                    &["sh", "-c", RESTORE_SH, "capstan-restore", saved, target],
                    &format!("restore {target}"),
                )?;
                Ok(Outcome::Unit)
            }
            Action::Upload {
                local,
                remote,
                mode,
            } => {
                let mut f = std::fs::File::open(local).map_err(|e| {
                    Fault::new(
                        FaultKind::BadInput,
                        Some(&host.name),
                        format!("cannot open {local}: {e}"),
                    )
                })?;
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                t.put(remote, &mut f, size, *mode)
                    .map(|_| Outcome::Unit)
                    .map_err(|e| self.transport_fault(host, e))
            }
            Action::WaitPort { .. } => unreachable!("handled above"),
            Action::Sql { .. } => unreachable!("SQL goes to the SQL client"),
            Action::Ddb { .. } => unreachable!("DolphinDB goes to its client"),
            Action::Become { .. } => unreachable!("unwrapped above (`inner`)"),
            Action::Snapshot { source, to } => {
                let sh = self.shell(host, t);
                let run = self.journal.get().map(|j| j.run_id.as_str());
                crate::backup::snapshot(&sh, source, to, run)
                    .map(|m| Outcome::Backup(BackupInfo::from_manifest(&host.name, &m, true)))
            }
            Action::VerifyBackup { path } => crate::backup::verify(&self.shell(host, t), path)
                .map(|m| Outcome::Backup(BackupInfo::from_manifest(&host.name, &m, false))),
            Action::MysqlDump {
                target,
                db,
                path,
                flags,
                tool,
            } => {
                let pw = target
                    .resolve_password(&self.inventory)
                    .map_err(|m| fault(format!("mysqldump of {db}: {m}")))?;
                let run = self.journal.get().map(|j| j.run_id.as_str());
                crate::backup::mysqldump(
                    &self.shell(host, t),
                    target,
                    pw.as_ref(),
                    &crate::backup::DumpJob {
                        db,
                        path,
                        flags,
                        tool: tool.as_deref().unwrap_or("mysqldump"),
                    },
                    run,
                )
                .map(|m| Outcome::Backup(BackupInfo::from_manifest(&host.name, &m, true)))
                .map_err(|f| self.redacted(f))
            }
            Action::MysqlLoad { target, db, path } => {
                let pw = target
                    .resolve_password(&self.inventory)
                    .map_err(|m| fault(format!("loading {path} into {db}: {m}")))?;
                crate::backup::mysql_load(&self.shell(host, t), target, pw.as_ref(), db, path)
                    .map(|m| Outcome::Backup(BackupInfo::from_manifest(&host.name, &m, false)))
                    .map_err(|f| self.redacted(f))
            }
            Action::RestoreSnapshot { snapshot, target } => {
                crate::backup::restore_dir(&self.shell(host, t), snapshot, target)
                    .map(|m| Outcome::Backup(BackupInfo::from_manifest(&host.name, &m, false)))
            }
            Action::Docker { call, timeout } => self.docker_real(host, t, call, *timeout, marker),
        }
    }

    /// Runs a docker operation; a failure carries docker's own message and its reason.
    pub(super) fn docker_real(
        &self,
        host: &HostEntry,
        t: &dyn Transport,
        op: &DockerOp,
        timeout: Option<Duration>,
        marker: Option<&str>,
    ) -> Result<Outcome, Fault> {
        let (live, sink) = self.live_output(host);
        let out = self.exec_on(
            host,
            t,
            &Command::Argv(op.argv()),
            &BTreeMap::new(),
            None,
            None,
            timeout,
            MAX_OUTPUT,
            Some(sink),
            Some((&BTreeMap::new(), marker)),
        );
        live.finish();
        let out = out.map_err(|mut f| {
            if matches!(f.reason.as_deref(), Some("spawn")) {
                // The local transport could not even start its shell.
                f.message = format!(
                    "{}: `{}` failed: the docker CLI is not installed ({})",
                    host.name,
                    op.describe(),
                    f.message
                );
                f.reason = Some("no_cli".into());
            }
            f
        })?;
        crate::docker::judge(&host.name, op, out)
            .map_err(|mut f| {
                if f.reason.as_deref() == Some("no_cli") && !f.message.contains("not installed") {
                    // The wrapper's shell says "docker: not found"; say what it means.
                    f.message = format!(
                        "{}: `{}` failed: the docker CLI is not installed ({})",
                        host.name,
                        op.describe(),
                        f.message
                    );
                }
                self.redacted(f)
            })
            .map(|o| o.map_or(Outcome::Unit, Outcome::Exec))
    }

    /// A long command's output as `output` events: the collector, and the sink the transport
    /// feeds (call `finish` on the collector when the command ends).
    pub(super) fn live_output(&self, host: &HostEntry) -> (Arc<LiveOutput>, transport::OutputSink) {
        let live = Arc::new(LiveOutput::new(
            &host.name,
            self.events.clone(),
            self.inventory.redactor.clone(),
        ));
        let l = live.clone();
        (live, Arc::new(move |stream, bytes| l.push(stream, bytes)))
    }

    fn shell<'a>(&'a self, host: &'a HostEntry, t: &'a dyn Transport) -> ExecShell<'a> {
        ExecShell {
            exec: self,
            host,
            t,
        }
    }

    /// Probes the port from here, the way clients will reach it.
    pub(super) fn wait_port_real(
        &self,
        host: &HostEntry,
        port: u16,
        timeout: Duration,
    ) -> Result<Outcome, Fault> {
        let start = Instant::now();
        let mut last;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let addrs = (host.address.as_str(), port).to_socket_addrs();
            match addrs {
                Ok(mut it) => match it.next() {
                    Some(a) => match TcpStream::connect_timeout(&a, Duration::from_secs(1)) {
                        Ok(_) => return Ok(Outcome::Unit),
                        Err(e) => last = e.to_string(),
                    },
                    None => last = "address resolves to nothing".into(),
                },
                Err(e) => last = e.to_string(),
            }
            if start.elapsed() >= timeout {
                return Err(Fault::new(
                    FaultKind::Timeout,
                    Some(&host.name),
                    format!(
                        "{}: port {port} on {} did not accept a connection within {}s (last: {last})",
                        host.name,
                        host.address,
                        timeout.as_secs()
                    ),
                ));
            }
            // The live status line and the heartbeat show the wait: its first try, then one
            // event every 2 s (a try every 250 ms would flood `--json`).
            if attempt % 8 == 1 {
                self.events.emit(&Event::Waiting {
                    step: current_step(),
                    what: format!("port {port} on {} ({})", host.name, host.address),
                    attempt,
                    waited_ms: start.elapsed().as_millis() as u64,
                    timeout_ms: timeout.as_millis() as u64,
                    every_ms: 2_000,
                    last: self.inventory.redactor.redact(&last),
                });
            }
            self.sleep(Duration::from_millis(250).min(timeout.saturating_sub(start.elapsed())))?;
        }
    }
}

/// A host's shell for the backup module: helper scripts and file writes through the transport.
struct ExecShell<'a> {
    exec: &'a Executor,
    host: &'a HostEntry,
    t: &'a dyn Transport,
}

impl HostShell for ExecShell<'_> {
    fn sh(&self, script: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<ExecOutput, Fault> {
        let mut argv = vec![
            "sh".to_string(),
            "-c".into(),
            script.into(),
            "capstan".into(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        self.exec.exec_on(
            self.host,
            self.t,
            &Command::Argv(argv),
            &BTreeMap::new(),
            None,
            stdin,
            None,
            MAX_READ,
            None,
            None,
        )
    }

    fn put(&self, path: &str, data: &[u8], mode: i32) -> Result<(), Fault> {
        self.t
            .put(path, &mut &data[..], data.len() as u64, mode)
            .map_err(|e| self.exec.transport_fault(self.host, e))
    }

    fn name(&self) -> &str {
        &self.host.name
    }
}

/// `$1` = source, `$2` = target, `$3` = where to keep the old directory (empty: remove it).
/// The new copy is complete before the old directory moves.
const REPLACE_DIR_SH: &str = r#"set -e
src=$1; dst=$2; keep=$3; new="$dst.capstan-new"; old="$dst.capstan-old"
rm -rf -- "$new" "$old"
cp -a -- "$src" "$new"
if [ -e "$dst" ]; then mv -- "$dst" "$old"; fi
mv -- "$new" "$dst"
if [ -n "$keep" ] && [ -e "$old" ]; then rm -rf -- "$keep"; mv -- "$old" "$keep"; else rm -rf -- "$old"; fi"#;

/// `$1` = saved copy, `$2` = target. Safe to run twice: once `saved` is gone the target has
/// been restored, and nothing is touched.
const RESTORE_SH: &str = r#"set -e
saved=$1; dst=$2
if [ ! -e "$saved" ] && [ ! -L "$saved" ]; then exit 0; fi
rm -rf -- "$dst"
mv -- "$saved" "$dst""#;

fn parse_df(text: &str) -> Option<i64> {
    // POSIX `df -P`: header, then one line; the 4th field is available 1K blocks.
    let line = text.lines().nth(1)?;
    let avail: i64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(avail * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_available_bytes() {
        let t =
            "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/vda 100 40 60 40% /\n";
        assert_eq!(parse_df(t), Some(60 * 1024));
        assert_eq!(parse_df("garbage"), None);
    }
}
