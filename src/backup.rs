//! Backups on hosts: directory snapshots and mysqldump files, each with a manifest that proves it whole.

use std::collections::BTreeMap;

use crate::error::FaultKind;
use crate::error::{last_lines, Fault};
use crate::secret::Secret;
use crate::sql::SqlTarget;
use crate::transport::ExecOutput;

/// What a backup holds, written beside it as `PATH.manifest.json`. `backup::verify` compares the
/// backup with it file by file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Format version.
    pub capstan_backup: u32,
    /// `dir` or `mysqldump`.
    pub kind: String,
    /// The directory snapshotted, or the database dumped (`db@user@address:port`).
    pub source: String,
    /// Where the backup is (the snapshot directory or the dump file).
    pub path: String,
    /// The run that took it, when it was taken inside a journaled run.
    pub run: Option<String>,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestFile {
    /// Relative to the snapshot (`./a/b`); empty for a dump, which is one file.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

impl Manifest {
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// One checksum for the whole backup: the dump's own, or a digest of the sorted file list.
    pub fn digest(&self) -> String {
        if self.kind == "mysqldump" {
            if let Some(f) = self.files.first() {
                return f.sha256.clone();
            }
        }
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for f in &self.files {
            h.update(format!("{}\t{}\t{}\n", f.sha256, f.size, f.path));
        }
        format!("{:x}", h.finalize())
    }
}

/// The manifest's path for a backup at `path`.
pub fn manifest_path(path: &str) -> String {
    format!("{}.manifest.json", path.trim_end_matches('/'))
}

// `BackupInfo`, the record reports and the journal keep, lives with the other records in
// `report`; what builds it from a manifest is here.
pub use crate::report::BackupInfo;

impl BackupInfo {
    pub fn from_manifest(host: &str, m: &Manifest, taken: bool) -> Self {
        BackupInfo {
            kind: m.kind.clone(),
            host: host.to_string(),
            source: m.source.clone(),
            path: m.path.clone(),
            files: m.files.len() as u64,
            bytes: m.total_bytes(),
            sha256: m.digest(),
            taken,
        }
    }
}

/// What a backup needs from its host: shell scripts and file writes, through the host's transport.
pub(crate) trait HostShell {
    /// Runs `sh -c SCRIPT capstan ARGS...` and returns its output, whatever the exit code.
    fn sh(&self, script: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<ExecOutput, Fault>;
    /// Writes a file (replacing it).
    fn put(&self, path: &str, data: &[u8], mode: i32) -> Result<(), Fault>;
    /// The host's name, for messages.
    fn name(&self) -> &str;

    fn fail(&self, reason: &str, msg: String) -> Fault {
        Fault::new(
            FaultKind::Action,
            Some(self.name()),
            format!("{}: {msg}", self.name()),
        )
        .with_reason(reason)
    }

    /// Runs a script that must exit 0.
    fn sh_ok(&self, script: &str, args: &[&str], what: &str) -> Result<String, Fault> {
        let out = self.sh(script, args, None)?;
        if out.code == Some(0) {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(self.fail(
                "failed",
                format!("{what} failed: {}", last_lines(&out.stderr, 3)),
            ))
        }
    }
}

/// Lists the regular files under `$1` as `size<TAB>./path` lines, then `--`, then sha256sum
/// lines. GNU find and coreutils, as on every Linux host the products run on.
const LIST_SH: &str = r#"set -e
cd -- "$1"
find . -type f -printf '%s\t%p\n'
echo --
find . -type f -print0 | xargs -0r sha256sum --"#;

/// `$1` = source, `$2` = where the partial copy goes.
const COPY_SH: &str = r#"set -e
rm -rf -- "$2"
cp -a -- "$1" "$2""#;

/// `$1` = the path that must have room: prints the used KiB of `$2` and the free KiB at `$1`.
const SPACE_SH: &str = r#"set -e
du -sk -- "$2" | cut -f1
df -Pk -- "$1" | awk 'NR==2 {print $4}'"#;

fn parse_listing(text: &str) -> Result<Vec<ManifestFile>, String> {
    let (sizes, sums) = text
        .split_once("\n--\n")
        .or_else(|| text.strip_prefix("--\n").map(|r| ("", r)))
        .ok_or_else(|| format!("unexpected listing: {}", last_lines(text.as_bytes(), 3)))?;
    let mut by_path: BTreeMap<String, (u64, Option<String>)> = BTreeMap::new();
    for line in sizes.lines().filter(|l| !l.is_empty()) {
        let (size, path) = line
            .split_once('\t')
            .ok_or_else(|| format!("unexpected listing line: {line}"))?;
        let size = size
            .parse()
            .map_err(|_| format!("unexpected listing line: {line}"))?;
        by_path.insert(path.to_string(), (size, None));
    }
    for line in sums.lines().filter(|l| !l.is_empty()) {
        let (sum, path) = line
            .split_once("  ")
            .ok_or_else(|| format!("unexpected sha256sum line: {line}"))?;
        match by_path.get_mut(path) {
            Some(e) => e.1 = Some(sum.to_string()),
            None => {
                return Err(format!(
                    "file name not supported in a snapshot (newline or backslash): {path}"
                ))
            }
        }
    }
    by_path
        .into_iter()
        .map(|(path, (size, sum))| match sum {
            Some(sha256) => Ok(ManifestFile { path, size, sha256 }),
            None => Err(format!(
                "file name not supported in a snapshot (newline or backslash): {path}"
            )),
        })
        .collect()
}

fn parent_dir(path: &str) -> String {
    let p = path.trim_end_matches('/');
    match p.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => p[..i].to_string(),
    }
}

/// Refuses before anything is written when the copy of `source` would not fit beside `to`.
fn check_space(sh: &dyn HostShell, source: &str, to: &str) -> Result<(), Fault> {
    let out = sh.sh_ok(SPACE_SH, &[&parent_dir(to), source], "measuring free space")?;
    let mut nums = out.lines().filter_map(|l| l.trim().parse::<u64>().ok());
    let (Some(need), Some(free)) = (nums.next(), nums.next()) else {
        return Err(sh.fail("failed", format!("unexpected du/df output: {out}")));
    };
    if need >= free {
        return Err(sh.fail(
            "no_space",
            format!(
                "not enough free space for a snapshot of {source} at {to}: it needs {} and {} has {} free; nothing was copied",
                human_kib(need),
                parent_dir(to),
                human_kib(free)
            ),
        ));
    }
    Ok(())
}

/// `du -k`/`df -k` figures for people: `1.5 GiB`.
fn human_kib(k: u64) -> String {
    bytesize::ByteSize::kib(k).display().iec().to_string()
}

/// Copies `source` to `to` (complete or not at all: a partial copy never takes the name), checks
/// the copy holds what `source` holds, file by file, and writes the manifest. An existing `to` is
/// replaced.
pub(crate) fn snapshot(
    sh: &dyn HostShell,
    source: &str,
    to: &str,
    run: Option<&str>,
) -> Result<Manifest, Fault> {
    check_space(sh, source, to)?;
    let partial = format!("{}.capstan-partial", to.trim_end_matches('/'));
    sh.sh_ok(COPY_SH, &[source, &partial], &format!("copy of {source}"))?;
    let listing = sh.sh_ok(LIST_SH, &[&partial], "listing the snapshot")?;
    let files = parse_listing(&listing).map_err(|m| sh.fail("failed", m))?;
    // The copy is only a backup if it is what the directory holds: a directory something
    // writes to while it is copied (a service still running) gives a copy of no moment.
    let original = sh.sh_ok(LIST_SH, &[source], &format!("listing {source}"))?;
    let original = parse_listing(&original).map_err(|m| sh.fail("failed", m))?;
    let differences = compare(&original, &files);
    if !differences.is_empty() {
        let _ = sh.sh(r#"rm -rf -- "$1""#, &[&partial], None);
        let n = differences.len();
        return Err(sh.fail(
            "changed_during_copy",
            format!(
                "{source} changed while it was copied ({n} difference{}: {}); is something still writing to it? Stop it, then snapshot again",
                if n == 1 { "" } else { "s" },
                differences.into_iter().take(3).collect::<Vec<_>>().join("; ")
            ),
        ));
    }
    let manifest = Manifest {
        capstan_backup: 1,
        kind: "dir".into(),
        source: source.to_string(),
        path: to.to_string(),
        run: run.map(str::to_string),
        files,
    };
    // The old manifest goes first: from here until the new one is written, `to` does not verify.
    sh.sh_ok(
        r#"set -e; rm -f -- "$3"; rm -rf -- "$2"; mv -- "$1" "$2""#,
        &[&partial, to, &manifest_path(to)],
        "moving the snapshot in place",
    )?;
    write_manifest(sh, &manifest)?;
    Ok(manifest)
}

fn write_manifest(sh: &dyn HostShell, m: &Manifest) -> Result<(), Fault> {
    let json = serde_json::to_vec_pretty(m).expect("manifests serialize");
    sh.put(&manifest_path(&m.path), &json, 0o600)
}

/// Reads the manifest of the backup at `path`; `None` when there is none.
pub(crate) fn read_manifest(sh: &dyn HostShell, path: &str) -> Result<Option<Manifest>, Fault> {
    let mp = manifest_path(path);
    let out = sh.sh(r#"[ -f "$1" ] || exit 3; cat -- "$1""#, &[&mp], None)?;
    match out.code {
        Some(3) => Ok(None),
        Some(0) => serde_json::from_slice(&out.stdout)
            .map(Some)
            .map_err(|e| sh.fail("corrupt", format!("{mp} is not a capstan manifest: {e}"))),
        _ => Err(sh.fail(
            "failed",
            format!("reading {mp} failed: {}", last_lines(&out.stderr, 3)),
        )),
    }
}

/// Proves the backup at `path` complete: every file of its manifest present with the same size
/// and checksum, and nothing else (a dump: same size and checksum, ends with the completion line).
pub(crate) fn verify(sh: &dyn HostShell, path: &str) -> Result<Manifest, Fault> {
    let m = read_manifest(sh, path)?.ok_or_else(|| {
        sh.fail(
            "missing",
            format!(
                "no backup at {path} (no manifest {}): it was never taken, or not completed",
                manifest_path(path)
            ),
        )
    })?;
    let problems = if m.kind == "mysqldump" {
        verify_dump(sh, &m)?
    } else {
        let listing = sh.sh(LIST_SH, &[path], None)?;
        if listing.code != Some(0) {
            return Err(sh.fail(
                "corrupt",
                format!(
                    "backup {path} cannot be read: {}",
                    last_lines(&listing.stderr, 3)
                ),
            ));
        }
        let now = parse_listing(&String::from_utf8_lossy(&listing.stdout))
            .map_err(|e| sh.fail("corrupt", e))?;
        compare(&m.files, &now)
    };
    if problems.is_empty() {
        Ok(m)
    } else {
        let n = problems.len();
        let shown: Vec<_> = problems.into_iter().take(5).collect();
        Err(sh.fail(
            "corrupt",
            format!(
                "backup {path} does not match its manifest ({n} problem{}): {}",
                if n == 1 { "" } else { "s" },
                shown.join("; ")
            ),
        ))
    }
}

fn compare(want: &[ManifestFile], have: &[ManifestFile]) -> Vec<String> {
    let have: BTreeMap<&str, &ManifestFile> = have.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut problems = Vec::new();
    for f in want {
        match have.get(f.path.as_str()) {
            None => problems.push(format!("{} is missing", f.path)),
            Some(h) if h.size != f.size => {
                problems.push(format!("{} has {} bytes, not {}", f.path, h.size, f.size))
            }
            Some(h) if h.sha256 != f.sha256 => {
                problems.push(format!("{} has a different checksum", f.path))
            }
            Some(_) => {}
        }
    }
    let known: std::collections::BTreeSet<&str> = want.iter().map(|f| f.path.as_str()).collect();
    for p in have.keys().filter(|p| !known.contains(*p)) {
        problems.push(format!("{p} is not in the manifest"));
    }
    problems
}

/// The line mysqldump writes last when it finished (with comments on, its default).
const DUMP_DONE: &str = "-- Dump completed";

/// Size, checksum and last line of a file: `$1`.
const FILE_FACTS_SH: &str = r#"set -e
[ -f "$1" ] || { echo "no such file: $1" >&2; exit 3; }
wc -c < "$1"
sha256sum < "$1" | cut -d' ' -f1
tail -n 1 "$1" | head -c 300"#;

struct FileFacts {
    size: u64,
    sha256: String,
    last_line: String,
}

fn file_facts(sh: &dyn HostShell, path: &str) -> Result<Result<FileFacts, String>, Fault> {
    let out = sh.sh(FILE_FACTS_SH, &[path], None)?;
    if out.code != Some(0) {
        return Ok(Err(last_lines(&out.stderr, 2)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let size = lines.next().and_then(|l| l.trim().parse().ok());
    let sha = lines.next().map(|l| l.trim().to_string());
    let last = lines.next().unwrap_or("").to_string();
    match (size, sha) {
        (Some(size), Some(sha256)) => Ok(Ok(FileFacts {
            size,
            sha256,
            last_line: last,
        })),
        _ => Ok(Err(format!("unexpected output: {text}"))),
    }
}

fn verify_dump(sh: &dyn HostShell, m: &Manifest) -> Result<Vec<String>, Fault> {
    let Some(want) = m.files.first() else {
        return Ok(vec!["the manifest lists no file".into()]);
    };
    Ok(match file_facts(sh, &m.path)? {
        Err(e) => vec![e],
        Ok(f) => {
            let mut p = Vec::new();
            if f.size != want.size {
                p.push(format!(
                    "{} has {} bytes, not {}",
                    m.path, f.size, want.size
                ));
            } else if f.sha256 != want.sha256 {
                p.push(format!("{} has a different checksum", m.path));
            }
            if !f.last_line.starts_with(DUMP_DONE) {
                p.push(format!(
                    "{} does not end with mysqldump's completion line",
                    m.path
                ));
            }
            p
        }
    })
}

/// The option file a MySQL client tool reads its credentials from: nothing on the command line.
fn option_file(target: &SqlTarget, password: Option<&Secret>) -> Vec<u8> {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut s = format!(
        "[client]\nuser={}\nhost={}\nport={}\nprotocol=TCP\n",
        q(&target.user),
        q(&target.address),
        target.port
    );
    if let Some(p) = password {
        s.push_str(&format!("password={}\n", q(p.expose())));
    }
    s.into_bytes()
}

/// Runs a MySQL client tool with credentials from a 0600 option file that the script makes from
/// its stdin and removes on exit, success or not. `$1` = file for stdout (`-` for none),
/// `$2` = file for stdin (`-` for none), `$3` = the tool, the rest its arguments.
const CLIENT_SH: &str = r#"set -e
umask 077
cnf="${TMPDIR:-/tmp}/capstan-my.$$.$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
trap 'rm -f -- "$cnf"' EXIT
# noclobber: created here and now (O_EXCL), never an existing file or a planted link.
set -C
cat > "$cnf"
set +C
out=$1; in=$2; tool=$3; shift 3
command -v "$tool" >/dev/null 2>&1 || { echo "$tool: command not found on this host" >&2; exit 127; }
if [ "$out" != - ]; then exec 1>"$out"; fi
if [ "$in" != - ]; then exec 0<"$in"; else exec 0</dev/null; fi
"$tool" --defaults-extra-file="$cnf" "$@""#;

/// Flags that would drop the completion line the dump is checked by.
const REFUSED_FLAGS: &[&str] = &["--skip-comments", "--compact", "--result-file", "-r"];

pub(crate) fn check_dump_flags(flags: &[String]) -> Result<(), String> {
    for f in flags {
        let name = f.split('=').next().unwrap_or(f);
        if REFUSED_FLAGS.contains(&name) {
            return Err(format!(
                "mysqldump flag `{f}` is not allowed: capstan writes the file itself and checks it ends with mysqldump's completion line"
            ));
        }
    }
    Ok(())
}

/// What to dump and how: the database, the file, the caller's flags and the dump program.
pub(crate) struct DumpJob<'a> {
    pub db: &'a str,
    pub path: &'a str,
    pub flags: &'a [String],
    pub tool: &'a str,
}

/// `mysqldump` of `db` on the host into `path`: written to a partial file, accepted only when the
/// tool exited 0 and the file is non-empty and ends with the completion line; then moved in place
/// with its manifest.
pub(crate) fn mysqldump(
    sh: &dyn HostShell,
    target: &SqlTarget,
    password: Option<&Secret>,
    job: &DumpJob<'_>,
    run: Option<&str>,
) -> Result<Manifest, Fault> {
    let DumpJob {
        db,
        path,
        flags,
        tool,
    } = *job;
    check_dump_flags(flags).map_err(|m| sh.fail("bad_flags", m))?;
    let partial = format!("{path}.capstan-partial");
    let mut args: Vec<&str> = vec![&partial, "-", tool];
    args.extend(flags.iter().map(String::as_str));
    // `db` is a validated plain identifier (sql::quote_ident), so it cannot read as a flag.
    args.push(db);
    let out = sh.sh(CLIENT_SH, &args, Some(&option_file(target, password)))?;
    let discard = |sh: &dyn HostShell| {
        let _ = sh.sh(r#"rm -f -- "$1""#, &[&partial], None);
    };
    if out.code != Some(0) {
        discard(sh);
        return Err(sh.fail(
            "dump_failed",
            format!(
                "mysqldump of {db} from {} exited with {}: {}",
                target.server(),
                out.code.map_or("a signal".into(), |c| format!("code {c}")),
                last_lines(&out.stderr, 3)
            ),
        ));
    }
    let facts = match file_facts(sh, &partial)? {
        Ok(f) => f,
        Err(e) => {
            discard(sh);
            return Err(sh.fail("dump_failed", format!("mysqldump of {db}: {e}")));
        }
    };
    if facts.size == 0 || !facts.last_line.starts_with(DUMP_DONE) {
        discard(sh);
        return Err(sh.fail(
            "dump_failed",
            format!(
                "mysqldump of {db} exited 0 but its output is {}: not accepted as a backup",
                if facts.size == 0 {
                    "empty".to_string()
                } else {
                    format!(
                        "missing the completion line (last line: {:?})",
                        facts.last_line
                    )
                }
            ),
        ));
    }
    let manifest = Manifest {
        capstan_backup: 1,
        kind: "mysqldump".into(),
        source: format!("{db}@{}", target.server()),
        path: path.to_string(),
        run: run.map(str::to_string),
        files: vec![ManifestFile {
            path: String::new(),
            size: facts.size,
            sha256: facts.sha256,
        }],
    };
    sh.sh_ok(
        r#"set -e; rm -f -- "$3"; mv -- "$1" "$2""#,
        &[&partial, path, &manifest_path(path)],
        "moving the dump in place",
    )?;
    write_manifest(sh, &manifest)?;
    Ok(manifest)
}

/// Loads a verified dump into `db` with the `mysql` client on the host.
pub(crate) fn mysql_load(
    sh: &dyn HostShell,
    target: &SqlTarget,
    password: Option<&Secret>,
    db: &str,
    path: &str,
) -> Result<Manifest, Fault> {
    let m = verify(sh, path)?;
    let out = sh.sh(
        CLIENT_SH,
        &["-", path, "mysql", db],
        Some(&option_file(target, password)),
    )?;
    if out.code != Some(0) {
        return Err(sh.fail(
            "restore_failed",
            format!(
                "loading {path} into {db} on {} failed: {}",
                target.server(),
                last_lines(&out.stderr, 3)
            ),
        ));
    }
    Ok(m)
}

/// `$1` = snapshot, `$2` = target: a copy of the snapshot replaces the target in one rename; the
/// snapshot itself stays (a restore can be repeated).
const RESTORE_DIR_SH: &str = r#"set -e
snap=$1; dst=$2; new="$dst.capstan-new"; old="$dst.capstan-old"
rm -rf -- "$new" "$old"
cp -a -- "$snap" "$new"
if [ -e "$dst" ]; then mv -- "$dst" "$old"; fi
mv -- "$new" "$dst"
rm -rf -- "$old""#;

/// Puts a verified directory snapshot back at `target`.
pub(crate) fn restore_dir(
    sh: &dyn HostShell,
    snapshot: &str,
    target: &str,
) -> Result<Manifest, Fault> {
    let m = verify(sh, snapshot)?;
    if m.kind != "dir" {
        return Err(sh.fail(
            "wrong_kind",
            format!(
                "{snapshot} is a {} backup, not a directory snapshot",
                m.kind
            ),
        ));
    }
    sh.sh_ok(
        RESTORE_DIR_SH,
        &[snapshot, target],
        &format!("restore of {target} from {snapshot}"),
    )?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_joins_sizes_and_sums() {
        let t = "3\t./a\n0\t./d/e f\n--\naaa  ./a\nbbb  ./d/e f\n";
        let files = parse_listing(t).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[1].path, "./d/e f");
        assert_eq!(files[1].sha256, "bbb");
        assert_eq!(parse_listing("--\n").unwrap(), vec![]);
        assert!(parse_listing("3\t./a\n--\n").is_err());
    }

    #[test]
    fn differences_are_named() {
        let f = |p: &str, s: u64, h: &str| ManifestFile {
            path: p.into(),
            size: s,
            sha256: h.into(),
        };
        let want = vec![f("./a", 1, "x"), f("./b", 2, "y"), f("./c", 3, "z")];
        let have = vec![f("./a", 1, "x"), f("./b", 2, "other"), f("./d", 1, "q")];
        let p = compare(&want, &have);
        assert_eq!(
            p,
            vec![
                "./b has a different checksum",
                "./c is missing",
                "./d is not in the manifest"
            ]
        );
    }

    #[test]
    fn flags_that_drop_the_completion_line_are_refused() {
        assert!(
            check_dump_flags(&["--single-transaction".into(), "--triggers=false".into()]).is_ok()
        );
        assert!(check_dump_flags(&["--skip-comments".into()]).is_err());
        assert!(check_dump_flags(&["--result-file=/x".into()]).is_err());
    }
}
