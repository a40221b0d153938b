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
    /// The files at or under `dir` (normalized): a range of the sorted paths, not a scan of
    /// the host (paths under `dir` sort after it, with only its siblings like `dir-x` between).
    fn files_under<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = (&'a String, &'a Vec<u8>)> {
        let stem = dir.trim_end_matches('/');
        self.files
            .range::<str, _>((std::ops::Bound::Included(stem), std::ops::Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(stem))
            .filter(move |(k, _)| under(k, dir))
    }
    /// The directories at or under `dir` (normalized), as `files_under`.
    fn dirs_under<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = &'a String> {
        let stem = dir.trim_end_matches('/');
        self.dirs
            .range::<str, _>((std::ops::Bound::Included(stem), std::ops::Bound::Unbounded))
            .take_while(move |k| k.starts_with(stem))
            .filter(move |k| under(k, dir))
    }

    /// Removes a file or a directory tree.
    pub fn remove(&mut self, p: &str) {
        let p = norm(p);
        let files: Vec<String> = self.files_under(&p).map(|(k, _)| k.clone()).collect();
        for k in files {
            self.files.remove(&k);
        }
        let dirs: Vec<String> = self.dirs_under(&p).cloned().collect();
        for k in dirs {
            self.dirs.remove(&k);
        }
    }
    /// Bytes of the files at or under `p`.
    pub(super) fn size_under(&self, p: &str) -> u64 {
        let p = norm(p);
        self.files_under(&p).map(|(_, v)| v.len() as u64).sum()
    }

    /// A manifest of what is at `path` now, as the real snapshot would write it.
    pub(super) fn manifest_of(&self, kind: &str, source: &str, path: &str) -> Manifest {
        let root = norm(path);
        let files = self
            .files_under(&root)
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
            .files_under(&from)
            .map(|(k, v)| (rebase(k), v.clone()))
            .collect();
        let dirs: Vec<_> = self.dirs_under(&from).map(|k| rebase(k)).collect();
        for d in dirs {
            self.mkdir_p(&d);
        }
        for (k, v) in files {
            self.write(&k, v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree's range of paths has its siblings sorted inside it (`b-x`, `b.x` sort before
    /// `b/`; `bc` after): they are neither removed, copied, counted nor listed with it.
    #[test]
    fn a_tree_is_its_own_paths_and_not_its_siblings() {
        let mut h = SimHost::default();
        for p in ["/a/b-x", "/a/b.x", "/a/b/f", "/a/b/g/h", "/a/bc", "/a/b0/k"] {
            h.write(p, vec![b'x'; 3]);
        }
        assert_eq!(h.size_under("/a/b/"), 6);
        let m = h.manifest_of("dir", "/a/b", "/a/b");
        let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["./f", "./g/h"]);
        h.copy("/a/b", "/c").unwrap();
        assert!(h.exists("/c/f") && h.exists("/c/g/h") && h.exists("/c/g"));
        assert!(!h.exists("/c-x") && !h.exists("/cc"));
        h.remove("/a/b");
        let left: Vec<&str> = h.files.keys().map(String::as_str).collect();
        assert_eq!(
            left,
            ["/a/b-x", "/a/b.x", "/a/b0/k", "/a/bc", "/c/f", "/c/g/h"]
        );
        assert!(!h.exists("/a/b") && !h.exists("/a/b/g") && h.exists("/a/b0"));
        h.remove("/");
        assert!(h.files.is_empty());
    }
}
