//! `cluster()` and the `Host` object: commands, files and ports on one host, all through the executor.

use std::sync::Arc;
use std::time::Duration;

use rhai::{Array, Dynamic, Engine, ImmutableString, Map};

use super::opts::{argv, Opts};
use super::{bad_input, def, fault, RunCtx};
use crate::action::{last_lines, Action, Fault, Outcome};
use crate::error::FaultKind;
use crate::inventory::HostEntry;
use crate::transport::Command;

type R<T> = Result<T, Box<rhai::EvalAltResult>>;

/// A host of the inventory as scripts see it. Embedders can act on it with [`HostHandle::perform`],
/// which goes through the run's executor like every built-in primitive.
#[derive(Clone)]
pub struct HostHandle {
    pub(crate) name: ImmutableString,
    pub(crate) run: Arc<RunCtx>,
    /// `h.become(USER)`: every action of this handle runs through `sudo -u USER`.
    pub(crate) become_: Option<ImmutableString>,
}

impl std::fmt::Debug for HostHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Host({})", self.name)
    }
}

impl HostHandle {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's inventory entry.
    pub fn entry(&self) -> &HostEntry {
        self.run
            .exec
            .inventory()
            .host(&self.name)
            .expect("handles are made only for inventory hosts")
    }

    /// Performs an action on this host in the run's mode (run, check or simulate).
    pub fn perform(&self, action: Action) -> Result<Outcome, Fault> {
        self.run.exec.perform(&self.name, self.privileged(action))
    }

    /// The action with this handle's privilege (`h.become(..)`).
    fn privileged(&self, action: Action) -> Action {
        match &self.become_ {
            Some(user) => Action::Become {
                user: user.to_string(),
                action: Box::new(action),
            },
            None => action,
        }
    }

    /// Registers actions that undo a change made through this handle: they run with the same
    /// privilege as the change.
    pub(crate) fn register_undo(&self, description: String, actions: Vec<Action>) {
        let actions = actions.into_iter().map(|a| self.privileged(a)).collect();
        self.run
            .register_action_undo(&self.name, description, actions);
    }

    fn act(&self, action: Action) -> R<Outcome> {
        self.perform(action).map_err(Into::into)
    }

    fn exists_now(&self, path: &str) -> R<bool> {
        match self.act(Action::Exists {
            path: path.to_string(),
        })? {
            Outcome::Bool(b) => Ok(b),
            _ => Ok(false),
        }
    }

    /// Makes a change to `path` undoable before `change` runs: when `path` exists, its old
    /// content is copied aside first and the undo puts it back; when it does not, the undo
    /// removes it. The undo is journaled before the change, and is safe to run whether or not
    /// the change happened. Without a journal or under `--check` the change just runs.
    fn undoable(&self, what: &str, path: &str, change: impl FnOnce() -> R<()>) -> R<()> {
        let Some(keep) = self.run.undo_keep_path(path) else {
            return change();
        };
        let undo = if self.exists_now(path)? {
            self.act(Action::Copy {
                from: path.to_string(),
                to: keep.clone(),
            })?;
            Action::Restore {
                target: path.to_string(),
                saved: keep,
            }
        } else {
            Action::Remove {
                path: path.to_string(),
            }
        };
        self.register_undo(format!("{}: undo {what}", self.name), vec![undo]);
        change()
    }

    fn fail(&self, kind: FaultKind, m: String) -> Box<rhai::EvalAltResult> {
        fault(kind, Some(&self.name), format!("{}: {m}", self.name))
    }

    fn abs(&self, func: &str, path: &str) -> R<String> {
        if path.starts_with('/') {
            Ok(path.to_string())
        } else {
            Err(self.fail(
                FaultKind::BadInput,
                format!("{func}: path `{path}` must be absolute"),
            ))
        }
    }

    fn exec(&self, command: Command, read_only: bool, opts: Opts) -> R<Map> {
        let allow_fail = opts.bool("allow_fail")?.unwrap_or(false);
        let ok_codes = opts.int_list("ok_codes")?.unwrap_or_else(|| vec![0]);
        // Quoted for people only when a failure is told: quoting a long script costs more than
        // keeping a copy of its argv.
        let shown = command.clone();
        let action = Action::Exec {
            command,
            read_only,
            env: opts.string_map("env")?,
            cwd: opts.string("cwd")?,
            stdin: opts.string("stdin")?.map(String::into_bytes),
            timeout: opts.duration("timeout")?,
            secret_files: opts.string_map("secret_files")?,
        };
        // `become: true` (root) or `become: "user"`: this call only, as `h.become(..)` does.
        let outcome = match opts.raw("become") {
            None => self.act(action)?,
            Some(v) => {
                let user = if let Some(b) = v.clone().try_cast::<bool>() {
                    b.then(|| "root".to_string())
                } else if let Some(u) = v.clone().try_cast::<ImmutableString>() {
                    Some(u.to_string()).filter(|u| !u.trim().is_empty())
                } else {
                    return Err(bad_input(format!(
                        "{}: `become` is true, false or a user name",
                        if read_only { "read" } else { "run" }
                    )));
                };
                match user {
                    Some(u) => HostHandle {
                        become_: Some(u.into()),
                        ..self.clone()
                    }
                    .act(action)?,
                    None => self.act(action)?,
                }
            }
        };
        let redactor = &self.run.exec.inventory().redactor;
        command_result(outcome, || shown.display(), &ok_codes, allow_fail, redactor)
            .map_err(|msg| self.fail(FaultKind::Action, msg))
    }
}

/// What a command returned, as scripts see it: `#{code, signal, stdout, stderr, ok, skipped}`.
/// An exit code outside `ok_codes` (or a signal) is an error, with the last lines of stderr,
/// unless `allow_fail`; `Err` is that message, redacted, for the caller's fault. A command
/// `--check` skipped reads as a success that printed nothing.
pub(super) fn command_result(
    outcome: Outcome,
    shown: impl FnOnce() -> String,
    ok_codes: &[i64],
    allow_fail: bool,
    redactor: &crate::secret::Redactor,
) -> Result<Map, String> {
    let mut m = Map::new();
    let Outcome::Exec(o) = outcome else {
        m.insert("code".into(), Dynamic::from_int(0));
        m.insert("signal".into(), Dynamic::UNIT);
        m.insert("stdout".into(), "".into());
        m.insert("stderr".into(), "".into());
        m.insert("ok".into(), true.into());
        m.insert("skipped".into(), true.into());
        return Ok(m);
    };
    let ok = o.signal.is_none() && o.code.is_some_and(|c| ok_codes.contains(&i64::from(c)));
    if !ok && !allow_fail {
        let how = match (&o.signal, o.code) {
            (Some(s), _) => format!("was killed by SIG{s}"),
            (None, Some(c)) => format!("exited with code {c}"),
            (None, None) => "ended without an exit status".into(),
        };
        let mut msg = format!("`{}` {how}", shown());
        let tail = last_lines(&o.stderr, 5);
        if !tail.is_empty() {
            msg.push_str(&format!("\nstderr: {tail}"));
        }
        return Err(redactor.redact(&msg));
    }
    m.insert(
        "code".into(),
        o.code
            .map_or(Dynamic::UNIT, |c| Dynamic::from_int(i64::from(c))),
    );
    m.insert(
        "signal".into(),
        o.signal.map_or(Dynamic::UNIT, Dynamic::from),
    );
    m.insert("stdout".into(), utf8_lossy(o.stdout).into());
    m.insert("stderr".into(), utf8_lossy(o.stderr).into());
    m.insert("ok".into(), ok.into());
    m.insert("skipped".into(), false.into());
    Ok(m)
}

/// The bytes as text, moved when they are UTF-8 (nearly always), each bad sequence replaced
/// otherwise.
fn utf8_lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The inventory as scripts see it: `cluster()`.
#[derive(Clone)]
pub struct ClusterHandle {
    run: Arc<RunCtx>,
}

impl std::fmt::Debug for ClusterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cluster")
    }
}

impl ClusterHandle {
    fn handle(&self, name: &str) -> Dynamic {
        Dynamic::from(HostHandle {
            name: name.into(),
            run: self.run.clone(),
            become_: None,
        })
    }
}

const EXEC_OPTS: &[&str] = &[
    "timeout",
    "allow_fail",
    "ok_codes",
    "env",
    "cwd",
    "stdin",
    "secret_files",
    "become",
];

fn json_to_dynamic(v: &serde_json::Value) -> Dynamic {
    rhai::serde::to_dynamic(v).unwrap_or(Dynamic::UNIT)
}

/// Refuses removals that are almost surely a bug in the script (`/`, `/opt`).
fn check_removable(path: &str) -> Result<(), String> {
    let depth = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .count();
    if path.split('/').any(|s| s == "..") {
        return Err(format!(
            "remove: refusing `{path}`: `..` in a path to remove"
        ));
    }
    if depth < 2 {
        return Err(format!("remove: refusing `{path}`: too close to the root"));
    }
    Ok(())
}

pub(super) fn register(engine: &mut Engine, run: &Arc<RunCtx>) {
    engine.register_type_with_name::<HostHandle>("Host");
    engine.register_type_with_name::<ClusterHandle>("Cluster");
    engine.register_fn("to_string", |h: &mut HostHandle| h.name.to_string());
    engine.register_fn("to_debug", |h: &mut HostHandle| match &h.become_ {
        Some(u) => format!("Host({} as {u})", h.name),
        None => format!("Host({})", h.name),
    });

    def(
        engine,
        "become",
        &["host: Host", "Host"],
        r#"
The same host, with every action through `sudo` as root: commands, file writes, copies,
`replace_dir`, docker calls, and their undos (which run with the same privilege). Like `become =
true` in the inventory, for one call or a few; `become_password` in the inventory is sent when
sudo asks for it (docs/inventory.md, "Privilege").

```rhai
let h = cluster().host("web1");
h.become().write_file("/etc/app.conf", "threads = 8\n");
h.become().run(["systemctl", "restart", "app"]);
```"#,
        |h: &mut HostHandle| -> HostHandle {
            HostHandle {
                become_: Some("root".into()),
                ..h.clone()
            }
        },
    );

    def(
        engine,
        "become",
        &["host: Host", "user: String", "Host"],
        r#"
The same host, with every action through `sudo -u USER` (the owner of an install, say).

```rhai
let h = cluster().host("web1");
let who = h.become("nobody").read(["id", "-un"]).stdout.trimmed();
log(`running as ${who}`);
```"#,
        |h: &mut HostHandle, user: &str| -> R<HostHandle> {
            if user.trim().is_empty() {
                return Err(bad_input("become: the user is empty"));
            }
            Ok(HostHandle {
                become_: Some(user.into()),
                ..h.clone()
            })
        },
    );
    engine.register_fn("==", |a: HostHandle, b: HostHandle| a.name == b.name);
    engine.register_fn("!=", |a: HostHandle, b: HostHandle| a.name != b.name);

    let r = run.clone();
    def(
        engine,
        "cluster",
        &["Cluster"],
        r#"
The inventory: every host and group of this run.

```rhai
let c = cluster();
for h in c.hosts() { log(`${h.name} at ${h.address}`); }
```"#,
        move || ClusterHandle { run: r.clone() },
    );

    def(
        engine,
        "hosts",
        &["cluster: Cluster", "Array"],
        r#"
All hosts, in inventory order.

```rhai
let n = cluster().hosts().len();
log(`${n} hosts`);
```"#,
        |c: &mut ClusterHandle| -> Array {
            c.run
                .exec
                .inventory()
                .hosts
                .iter()
                .map(|h| c.handle(&h.name))
                .collect()
        },
    );

    def(
        engine,
        "group",
        &["cluster: Cluster", "name: String", "Array"],
        r#"
The hosts of a group, in inventory order. An unknown group is an error that lists the groups.

```rhai
for h in cluster().group("web") { log(h.name); }
```"#,
        |c: &mut ClusterHandle, name: &str| -> R<Array> {
            let inv = c.run.exec.inventory();
            match inv.groups.get(name) {
                Some(members) => Ok(members.iter().map(|m| c.handle(m)).collect()),
                None => Err(bad_input(format!(
                    "no group `{name}` in the inventory (groups: {})",
                    inv.groups.keys().cloned().collect::<Vec<_>>().join(", ")
                ))),
            }
        },
    );

    def(
        engine,
        "has_group",
        &["cluster: Cluster", "name: String", "bool"],
        r#"
Whether the inventory has a group of that name.

```rhai
if cluster().has_group("db") { log("there is a db group"); }
```"#,
        |c: &mut ClusterHandle, name: &str| c.run.exec.inventory().groups.contains_key(name),
    );

    def(
        engine,
        "host",
        &["cluster: Cluster", "name: String", "Host"],
        r#"
One host by name. An unknown name is an error that lists the hosts.

```rhai
let h = cluster().host("web1");
```"#,
        |c: &mut ClusterHandle, name: &str| -> R<Dynamic> {
            let inv = c.run.exec.inventory();
            if inv.host(name).is_some() {
                Ok(c.handle(name))
            } else {
                Err(bad_input(format!(
                    "no host `{name}` in the inventory (hosts: {})",
                    inv.host_names().join(", ")
                )))
            }
        },
    );

    def(
        engine,
        "groups",
        &["cluster: Cluster", "Array"],
        r#"
The names of all groups.

```rhai
log(`groups: ${cluster().groups()}`);
```"#,
        |c: &mut ClusterHandle| -> Array {
            c.run
                .exec
                .inventory()
                .groups
                .keys()
                .map(|g| Dynamic::from(g.clone()))
                .collect()
        },
    );

    // Properties.
    engine.register_get("name", |h: &mut HostHandle| h.name.clone());
    engine.register_get("address", |h: &mut HostHandle| h.entry().address.clone());
    engine.register_get("port", |h: &mut HostHandle| i64::from(h.entry().port));
    engine.register_get("user", |h: &mut HostHandle| h.entry().user.clone());
    engine.register_get("transport", |h: &mut HostHandle| {
        format!("{:?}", h.entry().transport).to_lowercase()
    });
    engine.register_get("groups", |h: &mut HostHandle| -> Array {
        h.entry()
            .groups
            .iter()
            .map(|g| Dynamic::from(g.clone()))
            .collect()
    });
    engine.register_get("vars", |h: &mut HostHandle| -> Map {
        h.entry()
            .vars
            .iter()
            .map(|(k, v)| (k.into(), json_to_dynamic(v)))
            .collect()
    });

    def(
        engine,
        "hostvar",
        &["host: Host", "name: String", "?"],
        r#"
A host var (defaults, then groups, then the host's own). A missing var is an error naming the host.

```rhai
let root = cluster().host("web1").hostvar("root");
```"#,
        |h: &mut HostHandle, name: &str| -> R<Dynamic> {
            h.entry().vars.get(name).map(json_to_dynamic).ok_or_else(|| {
            h.fail(FaultKind::BadInput, format!("no var `{name}` (set it under [hosts.{}.vars], a group's vars or [defaults.vars])", h.name))
        })
        },
    );

    def(
        engine,
        "hostvar",
        &["host: Host", "name: String", "default: ?", "?"],
        r#"
A host var, or `default` when the host has none.

```rhai
let port = cluster().host("web1").hostvar("http_port", 8080);
```"#,
        |h: &mut HostHandle, name: &str, default: Dynamic| -> Dynamic {
            h.entry()
                .vars
                .get(name)
                .map(json_to_dynamic)
                .unwrap_or(default)
        },
    );

    def(
        engine,
        "in_group",
        &["host: Host", "group: String", "bool"],
        r#"
Whether the host belongs to a group.

```rhai
let h = cluster().host("web1");
if h.in_group("web") { log("web server"); }
```"#,
        |h: &mut HostHandle, g: &str| h.entry().groups.iter().any(|x| x == g),
    );

    def(
        engine,
        "path",
        &["host: Host", "relative: String", "String"],
        r#"
A path under the host's `root` var: `h.path("bin")` is `<root>/bin`.

```rhai
let bin = cluster().host("web1").path("bin");
```"#,
        |h: &mut HostHandle, rel: &str| -> R<String> {
            match h.entry().vars.get("root").and_then(|v| v.as_str()) {
                Some(root) => Ok(format!(
                    "{}/{}",
                    root.trim_end_matches('/'),
                    rel.trim_start_matches('/')
                )),
                None => Err(h.fail(
                    FaultKind::BadInput,
                    "h.path needs the host var `root` (a string)".into(),
                )),
            }
        },
    );

    // Commands.
    let exec_doc = |what: &str, example: &str| {
        format!(
            r#"
{what}

Returns `#{{code, signal, stdout, stderr, ok, skipped}}`. A non-zero exit (or a signal) is an error
unless `allow_fail: true` or the code is in `ok_codes`. Options: `timeout` (seconds or "5m"; default
the host's `command_timeout`), `allow_fail`, `ok_codes`, `env` (map), `cwd`, `stdin` (string),
`secret_files` (map: each variable receives the path of a 0600 file holding the value, removed when
the command ends; the way to hand a secret to a program that reads it from a file, with the value
in no argv or environment on the host), `become` (`true` for root or a user name: this call
through sudo, as `h.become(..)`).

The command runs under capstan's wrapper: it is killed with its process group when capstan or its
SSH session goes away, and a mutating command leaves a marker in `~/.capstan/markers` that a resume
reads (docs/recovery.md). A secret in `env`, `cwd` or an argument reaches the host in a 0600 file,
not on a command line; it is still in the command's own argv or environment, so prefer `stdin` or
`secret_files` for a secret.

```rhai
{example}
```"#
        )
    };
    def(engine, "run", &["host: Host", "argv: Array", "Map"], &exec_doc(
        "Runs a program with arguments. Each argument reaches the program unchanged (quoted for the remote shell). Mutating: under `--check` it is recorded, not run.",
        "let h = cluster().host(\"web1\");\nh.run([\"systemctl\", \"restart\", \"app\"]);"),
        |h: &mut HostHandle, a: Array| h.exec(Command::Argv(argv("run", &a)?), false, Opts::empty("run")));
    def(engine, "run", &["host: Host", "argv: Array", "options: Map", "Map"], &exec_doc(
        "`run` with options.",
        "let h = cluster().host(\"web1\");\nlet r = h.run([\"app-ctl\", \"status\"], #{ allow_fail: true, timeout: 30 });\nif r.code != 0 { log(\"app not running\"); }"),
        |h: &mut HostHandle, a: Array, o: Map| h.exec(Command::Argv(argv("run", &a)?), false, Opts::new("run", o, EXEC_OPTS)?));
    def(engine, "shell", &["host: Host", "command: String", "Map"], &exec_doc(
        "Runs a raw `sh -c` command line: pipes, globs and redirections work, and quoting is yours. Prefer `run` with an argv array. Mutating.",
        "let h = cluster().host(\"web1\");\nh.shell(\"ls /srv/app/releases | sort -V | tail -n 1\");"),
        |h: &mut HostHandle, c: &str| h.exec(Command::Shell(c.into()), false, Opts::empty("shell")));
    def(engine, "shell", &["host: Host", "command: String", "options: Map", "Map"], &exec_doc(
        "`shell` with options.",
        "let h = cluster().host(\"web1\");\nh.shell(\"echo $GREETING > /tmp/greeting\", #{ env: #{ GREETING: \"hi\" } });"),
        |h: &mut HostHandle, c: &str, o: Map| h.exec(Command::Shell(c.into()), false, Opts::new("shell", o, EXEC_OPTS)?));
    def(engine, "read", &["host: Host", "argv: Array", "Map"], &exec_doc(
        "Runs a program that only reads. Read-only: it runs under `--check` too, so keep it free of side effects.",
        "let h = cluster().host(\"web1\");\nlet v = h.read([\"cat\", \"/srv/app/VERSION\"]).stdout.trimmed();"),
        |h: &mut HostHandle, a: Array| h.exec(Command::Argv(argv("read", &a)?), true, Opts::empty("read")));
    def(engine, "read", &["host: Host", "argv: Array", "options: Map", "Map"], &exec_doc(
        "`read` with options.",
        "let h = cluster().host(\"web1\");\nlet r = h.read([\"pgrep\", \"-x\", \"app\"], #{ ok_codes: [0, 1] });"),
        |h: &mut HostHandle, a: Array, o: Map| h.exec(Command::Argv(argv("read", &a)?), true, Opts::new("read", o, EXEC_OPTS)?));
    def(engine, "read_shell", &["host: Host", "command: String", "Map"], &exec_doc(
        "A raw `sh -c` command line that only reads. Read-only: runs under `--check`.",
        "let h = cluster().host(\"web1\");\nlet n = h.read_shell(\"ls /srv/app/releases | wc -l\").stdout;"),
        |h: &mut HostHandle, c: &str| h.exec(Command::Shell(c.into()), true, Opts::empty("read_shell")));
    def(engine, "read_shell", &["host: Host", "command: String", "options: Map", "Map"], &exec_doc(
        "`read_shell` with options.",
        "let h = cluster().host(\"web1\");\nh.read_shell(\"df -h / | tail -n 1\", #{ timeout: 10 });"),
        |h: &mut HostHandle, c: &str, o: Map| h.exec(Command::Shell(c.into()), true, Opts::new("read_shell", o, EXEC_OPTS)?));

    // Files.
    def(
        engine,
        "exists",
        &["host: Host", "path: String", "bool"],
        r#"
Whether a file or directory exists. Read-only.

```rhai
let h = cluster().host("web1");
if !h.exists("/srv/app/VERSION") { fail("app not installed on web1"); }
```"#,
        |h: &mut HostHandle, p: &str| -> R<bool> {
            let path = h.abs("exists", p)?;
            match h.act(Action::Exists { path })? {
                Outcome::Bool(b) => Ok(b),
                _ => Ok(false),
            }
        },
    );

    def(
        engine,
        "read_file",
        &["host: Host", "path: String", "String"],
        r#"
A file's contents as text (invalid UTF-8 is replaced). Read-only. Files over 64 MiB are refused.

```rhai
let v = cluster().host("web1").read_file("/srv/app/VERSION").trimmed();
```"#,
        |h: &mut HostHandle, p: &str| -> R<String> {
            let path = h.abs("read_file", p)?;
            match h.act(Action::ReadFile { path })? {
                Outcome::Bytes(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
                _ => Ok(String::new()),
            }
        },
    );

    let write_doc = r#"
Writes a file atomically (a temporary file, then a rename), mode 0o644 unless `#{mode: 0o600}`.
Mutating. Undoable: the old file is copied aside first (`PATH.capstan-undo-..`) and put back by a
rollback; a file that did not exist is removed.

```rhai
let h = cluster().host("web1");
h.write_file("/srv/app/NOTE", "upgraded by capstan\n");
h.write_file("/srv/app/secret.conf", "k=v\n", #{ mode: 0o600 });
```"#;
    def(
        engine,
        "write_file",
        &["host: Host", "path: String", "content: String", "()"],
        write_doc,
        |h: &mut HostHandle, p: &str, c: &str| -> R<()> {
            let path = h.abs("write_file", p)?;
            h.undoable(&format!("write {path}"), &path, || {
                h.act(Action::WriteFile {
                    path: path.clone(),
                    content: c.as_bytes().to_vec(),
                    mode: 0o644,
                })
                .map(|_| ())
            })
        },
    );
    def(
        engine,
        "write_file",
        &[
            "host: Host",
            "path: String",
            "content: String",
            "options: Map",
            "()",
        ],
        write_doc,
        |h: &mut HostHandle, p: &str, c: &str, o: Map| -> R<()> {
            let path = h.abs("write_file", p)?;
            let o = Opts::new("write_file", o, &["mode"])?;
            let mode = o.int("mode")?.unwrap_or(0o644) as i32;
            h.undoable(&format!("write {path}"), &path, || {
                h.act(Action::WriteFile {
                    path: path.clone(),
                    content: c.as_bytes().to_vec(),
                    mode,
                })
                .map(|_| ())
            })
        },
    );

    def(
        engine,
        "mkdir",
        &["host: Host", "path: String", "()"],
        r#"
Creates a directory and its parents (`mkdir -p`). Mutating. Undoable: a directory that did not
exist is removed by a rollback (with what was put in it; its parents stay).

```rhai
cluster().host("web1").mkdir("/srv/app/backup");
```"#,
        |h: &mut HostHandle, p: &str| -> R<()> {
            let path = h.abs("mkdir", p)?;
            if h.run.registers_undos() && !h.exists_now(&path)? {
                let undo = Action::Remove { path: path.clone() };
                h.register_undo(format!("{}: undo mkdir {path}", h.name), vec![undo]);
            }
            h.act(Action::Mkdir { path }).map(|_| ())
        },
    );

    def(
        engine,
        "copy",
        &["host: Host", "from: String", "to: String", "()"],
        r#"
Copies a file or directory on the host (`cp -a`: modes, times and links kept). Mutating.
Undoable: what was at the target is copied aside first and put back by a rollback.

```rhai
cluster().host("web1").copy("/srv/app/VERSION", "/srv/app/VERSION.bak");
```"#,
        |h: &mut HostHandle, from: &str, to: &str| -> R<()> {
            let (from, to) = (h.abs("copy", from)?, h.abs("copy", to)?);
            h.undoable(&format!("copy to {to}"), &to, || {
                h.act(Action::Copy {
                    from,
                    to: to.clone(),
                })
                .map(|_| ())
            })
        },
    );

    def(
        engine,
        "move",
        &["host: Host", "from: String", "to: String", "()"],
        r#"
Moves or renames a file or directory on the host. Mutating. Undoable (moved back) unless the
target existed, which is logged: back it up first.

```rhai
let h = cluster().host("web1");
h.copy("/srv/app/VERSION", "/srv/app/VERSION.tmp");
h.move("/srv/app/VERSION.tmp", "/srv/app/VERSION.old");
```"#,
        |h: &mut HostHandle, from: &str, to: &str| -> R<()> {
            let (from, to) = (h.abs("move", from)?, h.abs("move", to)?);
            if h.run.registers_undos() {
                if h.exists_now(&to)? {
                    h.run.log(
                        "warn",
                        &format!(
                            "{}: move onto existing {to}: no automatic undo (back it up first)",
                            h.name
                        ),
                    );
                } else {
                    // Moves it back; does nothing if the move never happened.
                    let undo = Action::Restore {
                        target: from.clone(),
                        saved: to.clone(),
                    };
                    h.register_undo(format!("{}: undo move {from} -> {to}", h.name), vec![undo]);
                }
            }
            h.act(Action::Move { from, to }).map(|_| ())
        },
    );

    def(
        engine,
        "remove",
        &["host: Host", "path: String", "()"],
        r#"
Removes a file or a directory tree (`rm -rf`). Refuses `/`, top-level directories and paths with `..`.
Mutating, and not undoable: take a backup first if it may need to come back.

```rhai
cluster().host("web1").remove("/srv/app/tmp");
```"#,
        |h: &mut HostHandle, p: &str| -> R<()> {
            let path = h.abs("remove", p)?;
            check_removable(&path).map_err(|m| h.fail(FaultKind::BadInput, m))?;
            h.act(Action::Remove { path }).map(|_| ())
        },
    );

    def(
        engine,
        "replace_dir",
        &["host: Host", "target: String", "source: String", "()"],
        r#"
Replaces directory `target` with a copy of `source`: the copy is made beside the target first, then
swapped in with renames, so a failed copy leaves the old directory in place. Mutating. Undoable:
the old directory is kept (renamed, not copied) and put back by a rollback.

```rhai
let h = cluster().host("web1");
h.replace_dir("/srv/app/bin", "/srv/app/releases/1.1.0/bin");
```"#,
        |h: &mut HostHandle, target: &str, source: &str| -> R<()> {
            let (target, source) = (h.abs("replace_dir", target)?, h.abs("replace_dir", source)?);
            check_removable(&target).map_err(|m| h.fail(FaultKind::BadInput, m))?;
            let mut keep = h.run.undo_keep_path(&target);
            if let Some(k) = &keep {
                // The old directory is renamed aside (not copied) by the swap itself.
                let undo = if h.exists_now(&target)? {
                    Action::Restore {
                        target: target.clone(),
                        saved: k.clone(),
                    }
                } else {
                    keep = None;
                    Action::Remove {
                        path: target.clone(),
                    }
                };
                h.register_undo(format!("{}: undo replace_dir {target}", h.name), vec![undo]);
            }
            h.act(Action::ReplaceDir {
                target,
                source,
                keep,
            })
            .map(|_| ())
        },
    );

    def(
        engine,
        "checksum",
        &["host: Host", "path: String", "String"],
        r#"
The SHA-256 of a file, in hex. Read-only.

```rhai
let sum = cluster().host("web1").checksum("/srv/app/VERSION");
```"#,
        |h: &mut HostHandle, p: &str| -> R<String> {
            let path = h.abs("checksum", p)?;
            match h.act(Action::Checksum { path })? {
                Outcome::Text(t) => Ok(t),
                _ => Ok(String::new()),
            }
        },
    );

    def(
        engine,
        "free_space",
        &["host: Host", "path: String", "int"],
        r#"
Bytes available to the user on the file system holding `path`. Read-only.

```rhai
let h = cluster().host("web1");
if h.free_space("/srv") < 1024 * 1024 * 1024 { fail("less than 1 GiB free on web1:/srv"); }
```"#,
        |h: &mut HostHandle, p: &str| -> R<i64> {
            let path = h.abs("free_space", p)?;
            match h.act(Action::FreeSpace { path })? {
                Outcome::Int(i) => Ok(i),
                _ => Ok(0),
            }
        },
    );

    let upload_doc = r#"
Copies a file from the machine capstan runs on to the host (SFTP, or scp where SFTP is missing),
atomically, mode 0o644 unless `#{mode: ..}`. Mutating. Undoable, like `write_file`.

```rhai
let h = cluster().host("web1");
h.upload("README.md", "/srv/app/README.md");
```"#;
    def(
        engine,
        "upload",
        &["host: Host", "local: String", "remote: String", "()"],
        upload_doc,
        |h: &mut HostHandle, local: &str, remote: &str| -> R<()> {
            let remote = h.abs("upload", remote)?;
            h.undoable(&format!("upload to {remote}"), &remote, || {
                h.act(Action::Upload {
                    local: local.into(),
                    remote: remote.clone(),
                    mode: 0o644,
                })
                .map(|_| ())
            })
        },
    );
    def(
        engine,
        "upload",
        &[
            "host: Host",
            "local: String",
            "remote: String",
            "options: Map",
            "()",
        ],
        upload_doc,
        |h: &mut HostHandle, local: &str, remote: &str, o: Map| -> R<()> {
            let remote = h.abs("upload", remote)?;
            let o = Opts::new("upload", o, &["mode"])?;
            let mode = o.int("mode")?.unwrap_or(0o644) as i32;
            h.undoable(&format!("upload to {remote}"), &remote, || {
                h.act(Action::Upload {
                    local: local.into(),
                    remote: remote.clone(),
                    mode,
                })
                .map(|_| ())
            })
        },
    );

    let port_doc = r#"
Waits until a TCP port on the host accepts connections, probing from the machine capstan runs on.
Bounded: `timeout` defaults to 60 s; on timeout the error says what it saw last. Read-only.

```rhai
let h = cluster().host("web1");
h.wait_port(8080);
h.wait_port(8080, #{ timeout: "2m" });
```"#;
    def(
        engine,
        "wait_port",
        &["host: Host", "port: int", "()"],
        port_doc,
        |h: &mut HostHandle, port: i64| -> R<()> { wait_port(h, port, Opts::empty("wait_port")) },
    );
    def(
        engine,
        "wait_port",
        &["host: Host", "port: int", "options: Map", "()"],
        port_doc,
        |h: &mut HostHandle, port: i64, o: Map| -> R<()> {
            wait_port(h, port, Opts::new("wait_port", o, &["timeout"])?)
        },
    );
}

fn wait_port(h: &HostHandle, port: i64, o: Opts) -> R<()> {
    let port = u16::try_from(port).map_err(|_| {
        h.fail(
            FaultKind::BadInput,
            format!("wait_port: {port} is not a port"),
        )
    })?;
    let timeout = o.duration("timeout")?.unwrap_or(Duration::from_secs(60));
    h.act(Action::WaitPort { port, timeout }).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::check_removable;

    #[test]
    fn removal_guard() {
        assert!(check_removable("/").is_err());
        assert!(check_removable("/opt").is_err());
        assert!(check_removable("/opt/../etc/x").is_err());
        assert!(check_removable("/opt/app").is_ok());
    }
}
