//! A simulated host: its files, ports, processes and docker engine, and what commands do to them.

use super::*;

impl SimHost {
    /// Starts a process (a model starting its daemon); returns its pid.
    pub fn spawn(&mut self, cmdline: &str) -> u32 {
        self.next_pid = self.next_pid.max(1000) + 1;
        self.processes.insert(self.next_pid, cmdline.to_string());
        self.next_pid
    }

    /// Ends the processes whose command line contains `pattern`; returns how many.
    pub fn kill_matching(&mut self, pattern: &str) -> usize {
        let before = self.processes.len();
        self.processes.retain(|_, c| !c.contains(pattern));
        before - self.processes.len()
    }

    /// `pgrep [-f] PATTERN` and `pkill [-f] PATTERN` against the process table (a substring
    /// match on the command line), answered as procps does: exit 1 when nothing matches.
    pub(super) fn process_command(&mut self, command: &Command) -> Option<ExecOutput> {
        let Command::Argv(argv) = command else {
            return None;
        };
        let prog = argv.first()?.rsplit('/').next()?;
        if prog != "pgrep" && prog != "pkill" {
            return None;
        }
        let pattern = argv[1..].iter().rfind(|a| !a.starts_with('-'))?;
        let found: Vec<u32> = self
            .processes
            .iter()
            .filter(|(_, c)| c.contains(pattern.as_str()))
            .map(|(p, _)| *p)
            .collect();
        let code = if found.is_empty() { 1 } else { 0 };
        let stdout = if prog == "pgrep" {
            found.iter().map(|p| format!("{p}\n")).collect()
        } else {
            self.kill_matching(pattern);
            String::new()
        };
        Some(ExecOutput {
            code: Some(code),
            signal: None,
            stdout: stdout.into_bytes(),
            stderr: Vec::new(),
            truncated: false,
        })
    }

    /// Opens a port (a service came up), unless a `stays_down` fault keeps it closed.
    pub fn open_port(&mut self, port: u16) {
        if !self.held_down.contains(&port) {
            self.ports.insert(port);
        }
    }

    pub(super) fn mkdir_p(&mut self, d: &str) {
        let mut cur = Some(norm(d));
        while let Some(c) = cur {
            if !self.dirs.insert(c.clone()) {
                break;
            }
            cur = parent(&c).filter(|p| p != &c);
        }
    }
    /// Writes a file (and its parent directories).
    pub fn write(&mut self, p: &str, data: Vec<u8>) {
        if let Some(d) = parent(p) {
            self.mkdir_p(&d);
        }
        self.files.insert(norm(p), data);
    }
    /// Whether a file or directory exists.
    pub fn exists(&self, p: &str) -> bool {
        let p = norm(p);
        self.files.contains_key(&p) || self.dirs.contains(&p)
    }
    /// Removes a file or a directory tree.
    pub fn remove(&mut self, p: &str) {
        let p = norm(p);
        self.files.retain(|k, _| !under(k, &p));
        self.dirs.retain(|k| !under(k, &p));
    }
    /// Bytes of the files at or under `p`.
    pub(super) fn size_under(&self, p: &str) -> u64 {
        let p = norm(p);
        self.files
            .iter()
            .filter(|(k, _)| under(k, &p))
            .map(|(_, v)| v.len() as u64)
            .sum()
    }

    /// A manifest of what is at `path` now, as the real snapshot would write it.
    pub(super) fn manifest_of(&self, kind: &str, source: &str, path: &str) -> Manifest {
        let root = norm(path);
        let files = self
            .files
            .iter()
            .filter(|(k, _)| under(k, &root))
            .map(|(k, v)| ManifestFile {
                path: if *k == root {
                    String::new()
                } else {
                    format!(".{}", &k[root.len()..])
                },
                size: v.len() as u64,
                sha256: format!("{:x}", sha2::Sha256::digest(v)),
            })
            .collect();
        Manifest {
            capstan_backup: 1,
            kind: kind.into(),
            source: source.into(),
            path: path.into(),
            run: None,
            files,
        }
    }

    /// Compares the backup at `path` with its manifest.
    pub(super) fn verify(&self, path: &str) -> std::result::Result<Manifest, String> {
        let mp = manifest_path(path);
        let m: Manifest = self
            .files
            .get(&norm(&mp))
            .and_then(|b| serde_json::from_slice(b).ok())
            .ok_or_else(|| format!("no backup at {path} (no manifest {mp})"))?;
        let mut now = self.manifest_of(&m.kind, &m.source, path);
        if m.kind == "mysqldump" {
            for f in &mut now.files {
                f.path.clear();
            }
        }
        if now.files != m.files {
            return Err(format!("backup {path} does not match its manifest"));
        }
        Ok(m)
    }

    /// Copies a file or a tree; `to` names the copy (like `cp -a src dst` with no existing dst).
    pub(super) fn copy(&mut self, from: &str, to: &str) -> std::result::Result<(), String> {
        let (from, to) = (norm(from), norm(to));
        if !self.exists(&from) {
            return Err(format!(
                "cp: cannot stat '{from}': No such file or directory"
            ));
        }
        let rebase = |k: &str| format!("{to}{}", &k[from.len()..]);
        let files: Vec<_> = self
            .files
            .iter()
            .filter(|(k, _)| under(k, &from))
            .map(|(k, v)| (rebase(k), v.clone()))
            .collect();
        let dirs: Vec<_> = self
            .dirs
            .iter()
            .filter(|k| under(k, &from))
            .map(|k| rebase(k))
            .collect();
        for d in dirs {
            self.mkdir_p(&d);
        }
        for (k, v) in files {
            self.write(&k, v);
        }
        Ok(())
    }
}
