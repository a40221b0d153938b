//! `Action` and `Outcome`: every effect on a host as data, and what it returned.

use super::*;

/// One effect on one host, described before it happens. Serializable: undos are kept as actions
/// in the journal and performed by a later process.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Action {
    Exec {
        command: Command,
        read_only: bool,
        env: BTreeMap<String, String>,
        cwd: Option<String>,
        stdin: Option<Vec<u8>>,
        timeout: Option<Duration>,
        /// Variables the command receives as the path of a 0600 file holding the value
        /// (`secret_files`): the value is in no argv or environment on the host.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        secret_files: BTreeMap<String, String>,
    },
    ReadFile {
        path: String,
    },
    Exists {
        path: String,
    },
    Checksum {
        path: String,
    },
    FreeSpace {
        path: String,
    },
    /// Bytes a file or directory tree takes on disk (`du -sk`).
    DiskUsage {
        path: String,
    },
    WriteFile {
        path: String,
        content: Vec<u8>,
        mode: i32,
    },
    Mkdir {
        path: String,
    },
    Copy {
        from: String,
        to: String,
    },
    Move {
        from: String,
        to: String,
    },
    Remove {
        path: String,
    },
    /// Replace directory `target` with a copy of `source`, swapping in one rename. The old
    /// directory is kept at `keep` (for an undo) when given, removed otherwise.
    ReplaceDir {
        target: String,
        source: String,
        #[serde(default)]
        keep: Option<String>,
    },
    /// Put `saved` back at `target` (undo of `ReplaceDir` and of file writes): what is at
    /// `target` now is removed, then `saved` is renamed to `target`.
    Restore {
        target: String,
        saved: String,
    },
    /// Copy a file from the machine capstan runs on to the host.
    Upload {
        local: String,
        remote: String,
        mode: i32,
    },
    /// Wait until a TCP port on the host accepts connections.
    WaitPort {
        port: u16,
        timeout: Duration,
    },
    /// One statement (or session operation) on a SQL server, from the machine capstan runs on.
    Sql {
        target: SqlTarget,
        kind: SqlKind,
        #[serde(default)]
        statement: String,
        #[serde(default)]
        params: SqlParams,
    },
    /// A snapshot of directory `source` at `to`, with its manifest (refused up front when the
    /// copy would not fit).
    Snapshot {
        source: String,
        to: String,
    },
    /// Checks a backup (snapshot or dump) against its manifest.
    VerifyBackup {
        path: String,
    },
    /// `mysqldump` of `db` on the host into `path`, complete or not at all, with its manifest.
    MysqlDump {
        target: SqlTarget,
        db: String,
        path: String,
        flags: Vec<String>,
        /// The dump program on the host when it is not `mysqldump` on the PATH.
        #[serde(default)]
        tool: Option<String>,
    },
    /// Loads a verified dump into `db` with the `mysql` client on the host.
    MysqlLoad {
        target: SqlTarget,
        db: String,
        path: String,
    },
    /// Puts a verified directory snapshot back at `target` (the snapshot stays).
    RestoreSnapshot {
        snapshot: String,
        target: String,
    },
    /// One script on a DolphinDB node (or opening the session), from the machine capstan runs on.
    Ddb {
        target: DdbTarget,
        kind: DdbKind,
        #[serde(default)]
        script: String,
    },
    /// A docker operation through the host's `docker` CLI.
    Docker {
        call: DockerOp,
        /// Longer or shorter than the host's command timeout (`docker load`, an init script).
        #[serde(default)]
        timeout: Option<Duration>,
    },
    /// `action` through `sudo -u USER` (`h.become(USER)`): kept as one action so its undo, a
    /// replay and a later process run it with the same privilege.
    Become {
        user: String,
        action: Box<Action>,
    },
}

impl Action {
    /// Read-only actions run for real under `--check`; the others are recorded only.
    pub fn is_read_only(&self) -> bool {
        match self {
            Action::Become { action, .. } => action.is_read_only(),
            Action::Exec { read_only, .. } => *read_only,
            Action::ReadFile { .. }
            | Action::Exists { .. }
            | Action::Checksum { .. }
            | Action::FreeSpace { .. }
            | Action::DiskUsage { .. }
            | Action::VerifyBackup { .. }
            | Action::WaitPort { .. } => true,
            Action::Sql { kind, .. } => matches!(kind, SqlKind::Query | SqlKind::Connect),
            Action::Ddb { kind, .. } => matches!(kind, DdbKind::Query | DdbKind::Connect),
            Action::Docker { call, .. } => call.is_read_only(),
            _ => false,
        }
    }

    pub fn op(&self) -> &'static str {
        match self {
            Action::Become { action, .. } => action.op(),
            Action::Exec {
                read_only: true, ..
            } => "read",
            Action::Exec { .. } => "exec",
            Action::ReadFile { .. } => "read_file",
            Action::Exists { .. } => "exists",
            Action::Checksum { .. } => "checksum",
            Action::FreeSpace { .. } => "free_space",
            Action::DiskUsage { .. } => "disk_usage",
            Action::WriteFile { .. } => "write_file",
            Action::Mkdir { .. } => "mkdir",
            Action::Copy { .. } => "copy",
            Action::Move { .. } => "move",
            Action::Remove { .. } => "remove",
            Action::ReplaceDir { .. } => "replace_dir",
            Action::Restore { .. } => "restore",
            Action::Upload { .. } => "upload",
            Action::WaitPort { .. } => "wait_port",
            Action::Sql { kind, .. } => match kind {
                SqlKind::Connect => "sql_connect",
                SqlKind::Query => "sql_query",
                _ => "sql_exec",
            },
            Action::Ddb { kind, .. } => match kind {
                DdbKind::Connect => "ddb_connect",
                DdbKind::Query => "ddb_query",
                DdbKind::Exec => "ddb_exec",
            },
            Action::Snapshot { .. } => "snapshot",
            Action::VerifyBackup { .. } => "verify_backup",
            Action::MysqlDump { .. } => "mysqldump",
            Action::MysqlLoad { .. } => "mysql_load",
            Action::RestoreSnapshot { .. } => "restore_snapshot",
            Action::Docker { call, .. } => call.op(),
        }
    }

    /// For an action that talks to a server from the machine capstan runs on (SQL,
    /// DolphinDB): the inventory host it was named by, if any.
    pub fn server_host(&self) -> Option<Option<&str>> {
        match self {
            Action::Sql { target, .. } => Some(target.host.as_deref()),
            Action::Ddb { target, .. } => Some(target.host.as_deref()),
            _ => None,
        }
    }

    /// The SQL server an action talks to, when it is a SQL action.
    pub fn sql_target(&self) -> Option<&SqlTarget> {
        match self {
            Action::Sql { target, .. } => Some(target),
            _ => None,
        }
    }

    /// What is done, privilege aside (`Become` unwrapped).
    pub fn inner(&self) -> &Action {
        match self {
            Action::Become { action, .. } => action.inner(),
            a => a,
        }
    }

    /// The user a `Become` action runs as.
    pub fn become_user(&self) -> Option<&str> {
        match self {
            Action::Become { user, .. } => Some(user),
            _ => None,
        }
    }

    /// A command's program and arguments as they reach the program (not yet redacted).
    pub fn argv(&self) -> Option<Vec<String>> {
        match self.inner() {
            Action::Exec { command, .. } => Some(match command {
                Command::Argv(a) => a.clone(),
                Command::Shell(s) => vec!["sh".into(), "-c".into(), s.clone()],
            }),
            _ => None,
        }
    }

    /// The action as one line for plans, reports and events (not yet redacted).
    pub fn describe(&self) -> String {
        match self {
            Action::Become { user, action } => format!("as {user}: {}", action.describe()),
            Action::Exec { command, cwd, .. } => {
                let c = command.display();
                match cwd {
                    Some(d) => format!("run in {d}: {c}"),
                    None => format!("run: {c}"),
                }
            }
            Action::ReadFile { path } => format!("read {path}"),
            Action::Exists { path } => format!("test exists {path}"),
            Action::Checksum { path } => format!("sha256 {path}"),
            Action::FreeSpace { path } => format!("free space at {path}"),
            Action::DiskUsage { path } => format!("disk usage of {path}"),
            Action::WriteFile {
                path,
                content,
                mode,
            } => {
                format!("write {path} ({} bytes, mode {mode:o})", content.len())
            }
            Action::Mkdir { path } => format!("mkdir -p {path}"),
            Action::Copy { from, to } => format!("copy {from} -> {to}"),
            Action::Move { from, to } => format!("move {from} -> {to}"),
            Action::Remove { path } => format!("remove {path}"),
            Action::ReplaceDir {
                target,
                source,
                keep,
            } => match keep {
                Some(k) => {
                    format!("replace dir {target} with a copy of {source} (old kept at {k})")
                }
                None => format!("replace dir {target} with a copy of {source}"),
            },
            Action::Restore { target, saved } => format!("restore {target} from {saved}"),
            Action::Upload { local, remote, .. } => format!("upload {local} -> {remote}"),
            Action::WaitPort { port, timeout } => {
                format!("wait for port {port} (up to {}s)", timeout.as_secs())
            }
            Action::Sql {
                target,
                kind,
                statement,
                params,
            } => {
                let server = target.server();
                match kind {
                    SqlKind::Connect => format!("sql connect {server}"),
                    SqlKind::Begin => format!("sql {server}: START TRANSACTION"),
                    SqlKind::Commit => format!("sql {server}: COMMIT"),
                    SqlKind::Rollback => format!("sql {server}: ROLLBACK"),
                    SqlKind::Query | SqlKind::Exec => {
                        let p = params.display();
                        let p = if p.is_empty() { p } else { format!(" [{p}]") };
                        format!("sql {server}: {}{p}", crate::sql::one_line(statement))
                    }
                }
            }
            Action::Ddb {
                target,
                kind,
                script,
            } => match kind {
                DdbKind::Connect => format!("dolphindb connect {}", target.server()),
                _ => format!(
                    "dolphindb {}: {}",
                    target.server(),
                    crate::sql::one_line(script)
                ),
            },
            Action::Snapshot { source, to } => format!("snapshot {source} -> {to}"),
            Action::VerifyBackup { path } => format!("verify backup {path}"),
            Action::MysqlDump {
                target,
                db,
                path,
                flags,
                tool,
            } => {
                let tool = tool.as_deref().unwrap_or("mysqldump");
                let f = if flags.is_empty() {
                    String::new()
                } else {
                    format!(" {}", flags.join(" "))
                };
                format!("{tool}{f} {db} from {} -> {path}", target.server())
            }
            Action::MysqlLoad { target, db, path } => {
                format!("mysql {db} on {} < {path}", target.server())
            }
            Action::RestoreSnapshot { snapshot, target } => {
                format!("restore {target} from snapshot {snapshot}")
            }
            Action::Docker { call, .. } => call.describe(),
        }
    }
}

/// What an action returned.
#[derive(Debug, Clone)]
pub enum Outcome {
    Exec(ExecOutput),
    Bytes(Vec<u8>),
    Bool(bool),
    Int(i64),
    Text(String),
    Unit,
    Sql(SqlResult),
    Ddb(DdbValue),
    /// A backup taken, verified or restored.
    Backup(BackupInfo),
    /// `--check` did not perform this mutating action.
    Skipped,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_split() {
        assert!(Action::Exists { path: "/".into() }.is_read_only());
        assert!(!Action::Remove { path: "/x".into() }.is_read_only());
    }
}
