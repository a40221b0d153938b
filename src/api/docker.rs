//! `docker::on(h)`: containers and images on a host through its docker CLI, with undos for changes.

use std::collections::BTreeMap;
use std::time::Duration;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, Module, NativeCallContext};
use serde_json::Value;

use super::opts::{argv, Opts};
use super::{at, bad_input, def, def_in, HostHandle};
use crate::action::{last_lines, Action, Fault, Outcome};
use crate::docker::{DockerOp, RunSpec};
use crate::error::FaultKind;

type R<T> = Result<T, Box<EvalAltResult>>;

/// A host's docker engine as scripts see it: `docker::on(h)`.
#[derive(Clone)]
pub struct DockerHandle {
    host: HostHandle,
}

impl std::fmt::Debug for DockerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Docker({})", self.host.name())
    }
}

fn to_dynamic(v: &Value) -> Dynamic {
    rhai::serde::to_dynamic(v).unwrap_or(Dynamic::UNIT)
}

impl DockerHandle {
    fn name(&self) -> &str {
        self.host.name()
    }

    fn fail(&self, reason: &str, msg: String) -> Box<EvalAltResult> {
        Fault::new(
            FaultKind::Action,
            Some(self.name()),
            format!("{}: {msg}", self.name()),
        )
        .with_reason(reason)
        .into()
    }

    fn act_with(&self, call: DockerOp, timeout: Option<Duration>) -> R<Outcome> {
        self.host
            .perform(Action::Docker { call, timeout })
            .map_err(Into::into)
    }

    fn act(&self, call: DockerOp) -> R<Outcome> {
        self.act_with(call, None)
    }

    /// What a read printed on stdout.
    fn read(&self, call: DockerOp) -> R<String> {
        match self.act(call)? {
            Outcome::Exec(o) => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
            _ => Ok(String::new()),
        }
    }

    /// `docker inspect` of a container; `None` when there is none of that name.
    fn inspect_value(&self, name: &str) -> R<Option<Value>> {
        let call = DockerOp::Inspect {
            name: name.to_string(),
        };
        match self.host.perform(Action::Docker {
            call,
            timeout: None,
        }) {
            Ok(Outcome::Exec(o)) => {
                let v: Value = serde_json::from_slice(&o.stdout).map_err(|e| {
                    self.fail("docker", format!("unexpected docker inspect output: {e}"))
                })?;
                Ok(v.get(0).cloned())
            }
            Ok(_) => Ok(None),
            Err(f) if f.reason.as_deref() == Some("no_such_container") => Ok(None),
            Err(f) => Err(f.into()),
        }
    }

    fn is_running(&self, name: &str) -> R<Option<bool>> {
        Ok(self
            .inspect_value(name)?
            .map(|v| v["State"]["Running"].as_bool().unwrap_or(false)))
    }

    fn must_inspect(&self, name: &str) -> R<Value> {
        self.inspect_value(name)?
            .ok_or_else(|| self.fail("no_such_container", format!("no container named `{name}`")))
    }

    fn logs_text(&self, name: &str, tail: Option<u32>) -> R<String> {
        self.read(DockerOp::Logs {
            name: name.to_string(),
            tail,
        })
    }

    /// After a start: the container must still be running `settle` later, or its last log
    /// lines say why not.
    fn settled(&self, name: &str, settle: Duration) -> R<()> {
        self.host.run.exec.sleep(settle)?;
        let Some(v) = self.inspect_value(name)? else {
            return Err(self.fail(
                "exited",
                format!("container `{name}` is gone right after it started"),
            ));
        };
        if v["State"]["Running"].as_bool().unwrap_or(false) {
            return Ok(());
        }
        let code = v["State"]["ExitCode"].as_i64().unwrap_or(-1);
        let logs = self.logs_text(name, Some(20)).unwrap_or_default();
        let tail = last_lines(logs.as_bytes(), 10);
        let mut f = Fault::new(
            FaultKind::Action,
            Some(self.name()),
            format!(
                "{}: container `{name}` exited right after it started (exit code {code}); its last log lines:\n{}",
                self.name(),
                if tail.is_empty() { "(none)".to_string() } else { tail }
            ),
        )
        .with_reason("exited");
        f.code = Some(code);
        Err(f.into())
    }

    fn spec_of(&self, name: &str) -> R<RunSpec> {
        let c = self.must_inspect(name)?;
        let image = c["Config"]["Image"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let img = match self.act(DockerOp::ImageInspect {
            image: image.clone(),
        }) {
            Ok(Outcome::Exec(o)) => serde_json::from_slice::<Value>(&o.stdout)
                .ok()
                .and_then(|v| v.get(0).cloned()),
            _ => None,
        };
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let image_env = img
            .as_ref()
            .map(|i| strings(&i["Config"]["Env"]))
            .unwrap_or_default();
        let env = strings(&c["Config"]["Env"])
            .into_iter()
            .filter(|kv| !image_env.contains(kv))
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let entry = strings(&c["Config"]["Entrypoint"]);
        let cmd = strings(&c["Config"]["Cmd"]);
        let (img_entry, img_cmd) = img
            .as_ref()
            .map(|i| {
                (
                    strings(&i["Config"]["Entrypoint"]),
                    strings(&i["Config"]["Cmd"]),
                )
            })
            .unwrap_or_default();
        let (entrypoint, args) = if entry != img_entry && !entry.is_empty() {
            let mut args = entry[1..].to_vec();
            args.extend(cmd);
            (Some(entry[0].clone()), args)
        } else if cmd != img_cmd {
            (None, cmd)
        } else {
            (None, Vec::new())
        };
        let hc = &c["HostConfig"];
        let net = hc["NetworkMode"]
            .as_str()
            .filter(|n| !n.is_empty() && *n != "default")
            .map(str::to_string);
        let ulimits = hc["Ulimits"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| {
                        Some((
                            u["Name"].as_str()?.to_string(),
                            format!("{}:{}", u["Soft"].as_i64()?, u["Hard"].as_i64()?),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(RunSpec {
            image,
            name: c["Name"]
                .as_str()
                .unwrap_or(name)
                .trim_start_matches('/')
                .to_string(),
            net,
            volumes: strings(&hc["Binds"]),
            env,
            privileged: hc["Privileged"].as_bool().unwrap_or(false),
            pids_limit: hc["PidsLimit"].as_i64().filter(|p| *p != 0),
            ulimits,
            restart: hc["RestartPolicy"]["Name"]
                .as_str()
                .filter(|r| !r.is_empty() && *r != "no")
                .map(str::to_string),
            entrypoint,
            args,
            tty: c["Config"]["Tty"].as_bool().unwrap_or(false),
            interactive: c["Config"]["OpenStdin"].as_bool().unwrap_or(false),
        })
    }

    /// `settle: None`: a one-shot container (one that exists for `docker cp`), not required to
    /// keep running.
    fn run(&self, spec: RunSpec, settle: Option<Duration>) -> R<String> {
        if self.inspect_value(&spec.name)?.is_some() {
            return Err(self.fail(
                "name_in_use",
                format!(
                    "a container named `{}` already exists: stop and rename or remove it first",
                    spec.name
                ),
            ));
        }
        // Registered first; removing a container that never got created is a no-op.
        self.host.register_undo(
            format!("{}: remove container {}", self.name(), spec.name),
            vec![Action::Docker {
                call: DockerOp::Rm {
                    name: spec.name.clone(),
                    force: true,
                    missing_ok: true,
                },
                timeout: None,
            }],
        );
        let name = spec.name.clone();
        match self.act(DockerOp::Run { spec })? {
            Outcome::Exec(o) => {
                if let Some(settle) = settle {
                    self.settled(&name, settle)?;
                }
                Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
            }
            _ => Ok(String::new()),
        }
    }

    fn stop(&self, name: &str, timeout_s: Option<u32>) -> R<()> {
        if self.is_running(name)? == Some(true) {
            self.host.register_undo(
                format!("{}: start container {name} again", self.name()),
                vec![Action::Docker {
                    call: DockerOp::Start {
                        name: name.to_string(),
                    },
                    timeout: None,
                }],
            );
        }
        self.act(DockerOp::Stop {
            name: name.to_string(),
            timeout_s,
        })
        .map(|_| ())
    }

    fn stop_only(&self, name: &str, timeout_s: Option<u32>) -> R<()> {
        self.act(DockerOp::Stop {
            name: name.to_string(),
            timeout_s,
        })
        .map(|_| ())
    }

    fn start(&self, name: &str, settle: Duration) -> R<()> {
        if self.is_running(name)? == Some(false) {
            self.host.register_undo(
                format!("{}: stop container {name} again", self.name()),
                vec![Action::Docker {
                    call: DockerOp::Stop {
                        name: name.to_string(),
                        timeout_s: None,
                    },
                    timeout: None,
                }],
            );
        }
        match self.act(DockerOp::Start {
            name: name.to_string(),
        })? {
            Outcome::Exec(_) => self.settled(name, settle),
            _ => Ok(()),
        }
    }

    fn rename(&self, from: &str, to: &str) -> R<()> {
        self.host.register_undo(
            format!("{}: rename container {to} back to {from}", self.name()),
            vec![Action::Docker {
                call: DockerOp::Rename {
                    from: to.to_string(),
                    to: from.to_string(),
                    missing_ok: true,
                },
                timeout: None,
            }],
        );
        self.act(DockerOp::Rename {
            from: from.to_string(),
            to: to.to_string(),
            missing_ok: false,
        })
        .map(|_| ())
    }

    fn exec(&self, name: &str, argv: Vec<String>, o: Opts) -> R<Map> {
        let allow_fail = o.bool("allow_fail")?.unwrap_or(false);
        let ok_codes = o.int_list("ok_codes")?.unwrap_or_else(|| vec![0]);
        let call = DockerOp::Exec {
            name: name.to_string(),
            argv,
            user: o.string("user")?,
            env: o.string_map("env")?,
            read_only: o.bool("read_only")?.unwrap_or(false),
        };
        let shown = call.describe();
        let outcome = self.act_with(call, o.duration("timeout")?)?;
        let redactor = &self.host.run.exec.inventory().redactor;
        super::host::command_result(outcome, || shown, &ok_codes, allow_fail, redactor)
            .map_err(|msg| self.fail("exit_code", msg))
    }

    fn wait_log(&self, name: &str, text: &str, o: Opts) -> R<String> {
        let pace = super::wait::Pace::from_opts(&o, Duration::from_secs(300))?;
        let tail = o
            .int("tail")?
            .map(|t| t.clamp(1, 1_000_000) as u32)
            .or(Some(500));
        let check = self.host.run.exec.mode() == crate::Mode::Check;
        super::wait::until(
            &self.host.run,
            &pace,
            &format!("{text:?} in the logs of `{name}` on {}", self.name()),
            || {
                let logs = self.logs_text(name, tail)?;
                if let Some(line) = logs.lines().find(|l| l.contains(text)) {
                    return Ok(Ok(line.to_string()));
                }
                if check && logs.is_empty() {
                    // Under --check the container a playbook started was not started.
                    return Ok(Ok(String::new()));
                }
                if self.is_running(name)? == Some(false) {
                    return Err(self.fail(
                        "exited",
                        format!(
                            "container `{name}` stopped before logging {text:?}; its last log lines:\n{}",
                            last_lines(logs.as_bytes(), 10)
                        ),
                    ));
                }
                Ok(Err(last_lines(logs.as_bytes(), 5)))
            },
            |last| {
                Fault::new(
                    FaultKind::Timeout,
                    Some(self.name()),
                    format!(
                        "{}: gave up waiting for {text:?} in the logs of `{name}` after {}s; last log lines:\n{last}",
                        self.name(),
                        pace.timeout.as_secs_f64()
                    ),
                )
                .into()
            },
        )
    }

    fn wait_running(&self, name: &str, o: Opts) -> R<()> {
        let pace = super::wait::Pace::from_opts(&o, Duration::from_secs(120))?;
        let check = self.host.run.exec.mode() == crate::Mode::Check;
        super::wait::until(
            &self.host.run,
            &pace,
            &format!("container `{name}` running on {}", self.name()),
            || {
                let state = self.inspect_value(name)?;
                let Some(v) = state else {
                    return Ok(if check {
                        Ok(())
                    } else {
                        Err("it does not exist".into())
                    });
                };
                let running = v["State"]["Running"].as_bool().unwrap_or(false);
                let health = v["State"]["Health"]["Status"].as_str();
                Ok(match health {
                    _ if !running => Err(format!(
                        "it is {}",
                        v["State"]["Status"].as_str().unwrap_or("not running")
                    )),
                    Some(h) if h != "healthy" => Err(format!("its health is {h}")),
                    _ => Ok(()),
                })
            },
            |last| {
                Fault::new(
                    FaultKind::Timeout,
                    Some(self.name()),
                    format!(
                        "{}: container `{name}` was not running after {}s: {last}",
                        self.name(),
                        pace.timeout.as_secs_f64()
                    ),
                )
                .into()
            },
        )
    }
}

/// A run spec from a script map (`image` and `name` required).
fn spec_from_map(m: Map) -> R<RunSpec> {
    let o = Opts::new(
        "docker run",
        m,
        &[
            "image",
            "name",
            "net",
            "volumes",
            "env",
            "privileged",
            "pids_limit",
            "ulimits",
            "restart",
            "entrypoint",
            "args",
            "tty",
            "interactive",
        ],
    )?;
    let need = |k: &str, v: Option<String>| {
        v.filter(|s| !s.is_empty())
            .ok_or_else(|| bad_input(format!("docker run: the spec needs `{k}`")))
    };
    let ulimits = o
        .string_map("ulimits")?
        .into_iter()
        .collect::<BTreeMap<_, _>>();
    Ok(RunSpec {
        image: need("image", o.string("image")?)?,
        name: need("name", o.string("name")?)?,
        net: o.string("net")?,
        volumes: o.string_list("volumes")?.unwrap_or_default(),
        env: o.string_map("env")?,
        privileged: o.bool("privileged")?.unwrap_or(false),
        pids_limit: o.int("pids_limit")?,
        ulimits,
        restart: o.string("restart")?,
        entrypoint: o.string("entrypoint")?,
        args: o.string_list("args")?.unwrap_or_default(),
        tty: o.bool("tty")?.unwrap_or(false),
        interactive: o.bool("interactive")?.unwrap_or(false),
    })
}

fn spec_to_map(s: &RunSpec) -> Map {
    let mut m = Map::new();
    m.insert("image".into(), s.image.clone().into());
    m.insert("name".into(), s.name.clone().into());
    m.insert(
        "net".into(),
        s.net.clone().map_or(Dynamic::UNIT, Dynamic::from),
    );
    m.insert(
        "volumes".into(),
        s.volumes
            .iter()
            .cloned()
            .map(Dynamic::from)
            .collect::<Array>()
            .into(),
    );
    let env: Map = s
        .env
        .iter()
        .map(|(k, v)| (k.as_str().into(), Dynamic::from(v.clone())))
        .collect();
    m.insert("env".into(), env.into());
    m.insert("privileged".into(), s.privileged.into());
    m.insert(
        "pids_limit".into(),
        s.pids_limit.map_or(Dynamic::UNIT, Dynamic::from_int),
    );
    let ul: Map = s
        .ulimits
        .iter()
        .map(|(k, v)| (k.as_str().into(), Dynamic::from(v.clone())))
        .collect();
    m.insert("ulimits".into(), ul.into());
    m.insert(
        "restart".into(),
        s.restart.clone().map_or(Dynamic::UNIT, Dynamic::from),
    );
    m.insert(
        "entrypoint".into(),
        s.entrypoint.clone().map_or(Dynamic::UNIT, Dynamic::from),
    );
    m.insert(
        "args".into(),
        s.args
            .iter()
            .cloned()
            .map(Dynamic::from)
            .collect::<Array>()
            .into(),
    );
    m.insert("tty".into(), s.tty.into());
    m.insert("interactive".into(), s.interactive.into());
    m
}

/// `docker ps`/`images` JSON lines as maps with lower-case keys.
fn json_lines(text: &str, keys: &[(&str, &str)]) -> Array {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            let mut m = Map::new();
            for (from, to) in keys {
                m.insert((*to).into(), to_dynamic(&v[*from]));
            }
            Dynamic::from_map(m)
        })
        .collect()
}

fn settle_of(o: &Opts) -> R<Duration> {
    Ok(o.duration("settle")?.unwrap_or(Duration::from_secs(2)))
}

pub(super) fn register(engine: &mut Engine) {
    engine.register_type_with_name::<DockerHandle>("Docker");
    engine.register_fn("to_string", |d: &mut DockerHandle| {
        format!("docker on {}", d.name())
    });
    let mut m = Module::new();
    def_in(
        &mut m,
        "on",
        &["host: Host", "Docker"],
        r#"
The docker engine of a host, driven through the `docker` CLI over the host's transport (local or
SSH). Its reads (`ps`, `inspect`, `images`, `logs`, ...) run under `--check`; its changes are
recorded, and those that can be reversed register their undo (a stopped container is started
again, a created one removed, a renamed one renamed back). A failure carries docker's own message
and a reason (`e.reason`): `no_such_container`, `no_such_image`, `name_in_use`, `daemon`,
`permission`, `no_cli`, `no_such_file`, `not_running`, `exited`.

```rhai
let d = docker::on(cluster().host("web1"));
let running = d.ps(#{ status: "running" });
```"#,
        |h: HostHandle| DockerHandle { host: h },
    );
    engine.register_static_module("docker", m.into());

    def(
        engine,
        "check",
        &["docker: Docker", "Map"],
        r#"
Proves the host can run docker before anything changes: the CLI is installed and the daemon
answers. Returns `#{ client, server }` versions; fails with reason `no_cli`, `daemon` or
`permission` otherwise. Read-only.

```rhai
let v = docker::on(cluster().host("web1")).check();
log(`docker ${v.server}`);
```"#,
        |d: DockerHandle| -> R<Map> {
            let text = d.read(DockerOp::Version)?;
            let v: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
            let mut m = Map::new();
            m.insert("client".into(), to_dynamic(&v["Client"]["Version"]));
            m.insert("server".into(), to_dynamic(&v["Server"]["Version"]));
            Ok(m)
        },
    );

    let ps_keys: &[(&str, &str)] = &[
        ("ID", "id"),
        ("Names", "name"),
        ("Image", "image"),
        ("State", "state"),
        ("Status", "status"),
        ("CreatedAt", "created"),
        ("Ports", "ports"),
        ("Mounts", "mounts"),
    ];
    let ps_doc = r#"
Containers on the host, running or not (`docker ps -a`), as maps `#{ id, name, image, state,
status, created, ports, mounts }`. The filter is a name (docker matches it as a substring) or a map
of docker filters (`#{ name: "oms", status: "running", ancestor: "oms:4.2.9" }`). Read-only.

```rhai
let d = docker::on(cluster().host("web1"));
for c in d.ps("oms") { log(`${c.name}: ${c.state}`); }
```"#;
    let keys = ps_keys.to_vec();
    def(
        engine,
        "ps",
        &["docker: Docker", "Array"],
        ps_doc,
        move |d: DockerHandle| -> R<Array> {
            Ok(json_lines(
                &d.read(DockerOp::Ps { filters: vec![] })?,
                &keys,
            ))
        },
    );
    let keys = ps_keys.to_vec();
    def(
        engine,
        "ps",
        &["docker: Docker", "filter: ?", "Array"],
        ps_doc,
        move |d: DockerHandle, filter: Dynamic| -> R<Array> {
            let filters = if filter.is_string() {
                vec![format!("name={filter}")]
            } else if let Some(m) = filter.read_lock::<Map>() {
                m.iter().map(|(k, v)| format!("{k}={v}")).collect()
            } else {
                return Err(bad_input("docker ps: the filter is a name or a map"));
            };
            Ok(json_lines(&d.read(DockerOp::Ps { filters })?, &keys))
        },
    );

    def(
        engine,
        "inspect",
        &["docker: Docker", "name: String", "Map"],
        r#"
`docker inspect` of a container, as docker prints it (`State`, `Config`, `HostConfig`, `Mounts`,
...). Fails with reason `no_such_container` when there is none. Read-only.

```rhai
let d = docker::on(cluster().host("web1"));
if d.exists("app") { log(d.inspect("app").State.Status); }
```"#,
        |d: DockerHandle, name: &str| -> R<Dynamic> { Ok(to_dynamic(&d.must_inspect(name)?)) },
    );
    def(
        engine,
        "exists",
        &["docker: Docker", "name: String", "bool"],
        r#"
Whether a container of that name exists (running or not). Read-only.

```rhai
let d = docker::on(cluster().host("web1"));
let there = d.exists("app");
```"#,
        |d: DockerHandle, name: &str| -> R<bool> { Ok(d.inspect_value(name)?.is_some()) },
    );
    def(
        engine,
        "running",
        &["docker: Docker", "name: String", "bool"],
        r#"
Whether a container of that name is running (false when there is none). Read-only.

```rhai
let d = docker::on(cluster().host("web1"));
let up = d.running("app");
```"#,
        |d: DockerHandle, name: &str| -> R<bool> { Ok(d.is_running(name)?.unwrap_or(false)) },
    );
    def(
        engine,
        "mounts",
        &["docker: Docker", "name: String", "Array"],
        r#"
A container's mounts as maps `#{ type, source, destination, mode, rw }`. Read-only.

```rhai
let d = docker::on(cluster().host("web1"));
if d.exists("app") {
    for m in d.mounts("app") { log(`${m.source} -> ${m.destination}`); }
}
```"#,
        |d: DockerHandle, name: &str| -> R<Array> {
            let v = d.must_inspect(name)?;
            Ok(v["Mounts"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|m| {
                            let mut o = Map::new();
                            for (from, to) in [
                                ("Type", "type"),
                                ("Source", "source"),
                                ("Destination", "destination"),
                                ("Mode", "mode"),
                                ("RW", "rw"),
                            ] {
                                o.insert(to.into(), to_dynamic(&m[from]));
                            }
                            Dynamic::from_map(o)
                        })
                        .collect()
                })
                .unwrap_or_default())
        },
    );
    def(
        engine,
        "images",
        &["docker: Docker", "Array"],
        r#"
Images on the host as maps `#{ repository, tag, ref, id, size }` (`ref` is `repository:tag`).
Read-only.

```rhai
let d = docker::on(cluster().host("web1"));
let refs = d.images().map(|i| i.ref);
```"#,
        |d: DockerHandle| -> R<Array> {
            let text = d.read(DockerOp::Images)?;
            let mut out = json_lines(
                &text,
                &[
                    ("Repository", "repository"),
                    ("Tag", "tag"),
                    ("ID", "id"),
                    ("Size", "size"),
                ],
            );
            for i in out.iter_mut() {
                if let Some(mut m) = i.write_lock::<Map>() {
                    let r = format!(
                        "{}:{}",
                        m.get("repository")
                            .map(|x| x.to_string())
                            .unwrap_or_default(),
                        m.get("tag").map(|x| x.to_string()).unwrap_or_default()
                    );
                    m.insert("ref".into(), r.into());
                }
            }
            Ok(out)
        },
    );

    let load_doc = r#"
Loads images from a tar on the host (`docker load -i`) and returns the references it loaded.
Mutating (an extra image changes nothing that runs, so no undo). `timeout` for big images.

```rhai
let d = docker::on(cluster().host("web1"));
let refs = d.load("/srv/images/app-1.1.0.tar", #{ timeout: "10m" });
```"#;
    let load = |d: DockerHandle, tar: &str, o: Opts| -> R<Array> {
        match d.act_with(
            DockerOp::Load {
                tar: tar.to_string(),
            },
            o.duration("timeout")?,
        )? {
            Outcome::Exec(out) => Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("Loaded image: ")
                        .or_else(|| l.strip_prefix("Loaded image ID: "))
                })
                .map(|r| Dynamic::from(r.trim().to_string()))
                .collect()),
            _ => Ok(Array::new()),
        }
    };
    def(
        engine,
        "load",
        &["docker: Docker", "tar: String", "Array"],
        load_doc,
        move |d: DockerHandle, tar: &str| load(d, tar, Opts::empty("docker load")),
    );
    def(
        engine,
        "load",
        &["docker: Docker", "tar: String", "options: Map", "Array"],
        load_doc,
        move |d: DockerHandle, tar: &str, o: Map| {
            load(d, tar, Opts::new("docker load", o, &["timeout"])?)
        },
    );
    def(
        engine,
        "save",
        &["docker: Docker", "image: String", "tar: String", "()"],
        r#"
Saves an image to a tar on the host (`docker save -o`). Mutating; no undo.

```rhai
let d = docker::on(cluster().host("web1"));
if d.images().some(|i| i.ref == "app:1.0.0") { d.save("app:1.0.0", "/srv/images/app-1.0.0.tar"); }
```"#,
        |d: DockerHandle, image: &str, tar: &str| -> R<()> {
            d.act(DockerOp::Save {
                image: image.to_string(),
                tar: tar.to_string(),
            })
            .map(|_| ())
        },
    );

    let run_doc = r#"
Starts a container (`docker run -d`) from a spec `#{ image, name, net, volumes, env, privileged,
pids_limit, ulimits, restart, entrypoint, args, tty, interactive }` (`image` and `name` required),
usually `spec_of` an existing one with a few changes. Refused when the name is taken. After
`settle` (default 2 s) the container must still be running, or the error shows its exit code and
last log lines; `running: false` drops that check, for a one-shot container that only exists to
have files copied out of its image (`cp`). Mutating; its undo removes the container. Returns the
container id.

```rhai
let d = docker::on(cluster().host("web1"));
if d.exists("app") {
    let spec = d.spec_of("app");
    spec.name = "app-new";
    spec.env.IS_UPGRADE = "true";
    d.stop("app");
    d.run(spec);
}
```"#;
    def(
        engine,
        "run",
        &["docker: Docker", "spec: Map", "String"],
        run_doc,
        |d: DockerHandle, spec: Map| d.run(spec_from_map(spec)?, Some(Duration::from_secs(2))),
    );
    def(
        engine,
        "run",
        &["docker: Docker", "spec: Map", "options: Map", "String"],
        run_doc,
        |d: DockerHandle, spec: Map, o: Map| {
            let o = Opts::new("docker run", o, &["settle", "running"])?;
            let settle = match o.bool("running")? {
                Some(false) => None,
                _ => Some(settle_of(&o)?),
            };
            d.run(spec_from_map(spec)?, settle)
        },
    );
    def(
        engine,
        "spec_of",
        &["docker: Docker", "name: String", "Map"],
        r#"
The run spec of an existing container, read from `docker inspect`: its image, name, network,
bind mounts, the environment it added to the image's, privileges, pids limit, ulimits, restart
policy, entrypoint and command when they differ from the image's, tty and stdin. Change what must
change and give it to `run`. Read-only.

```rhai
let d = docker::on(cluster().host("web1"));
if d.exists("app") { let spec = d.spec_of("app"); log(`${spec.image} with ${spec.volumes.len()} mounts`); }
```"#,
        |d: DockerHandle, name: &str| -> R<Map> { Ok(spec_to_map(&d.spec_of(name)?)) },
    );

    let stop_doc = r#"
Stops a container (`docker stop`, `timeout` seconds before SIGKILL). Mutating; when it was running
its undo starts it again, unless `undo: false` (the playbook starts it in an undo of its own,
after other work: OMS starts the old container only once its metadata is restored).

```rhai
let d = docker::on(cluster().host("web1"));
if d.running("app") { d.stop("app", #{ timeout: 30 }); }
```"#;
    def(
        engine,
        "stop",
        &["docker: Docker", "name: String", "()"],
        stop_doc,
        |d: DockerHandle, name: &str| d.stop(name, None),
    );
    def(
        engine,
        "stop",
        &["docker: Docker", "name: String", "options: Map", "()"],
        stop_doc,
        |d: DockerHandle, name: &str, o: Map| {
            let o = Opts::new("docker stop", o, &["timeout", "undo"])?;
            let t = o.duration("timeout")?.map(|t| t.as_secs() as u32);
            if o.bool("undo")? == Some(false) {
                return d.stop_only(name, t);
            }
            d.stop(name, t)
        },
    );
    let start_doc = r#"
Starts a stopped container. After `settle` (default 2 s) it must still be running, or the error
shows its exit code and last log lines. Mutating; when it was stopped its undo stops it again.

```rhai
let d = docker::on(cluster().host("web1"));
if d.exists("app") && !d.running("app") { d.start("app"); }
```"#;
    def(
        engine,
        "start",
        &["docker: Docker", "name: String", "()"],
        start_doc,
        |d: DockerHandle, name: &str| d.start(name, Duration::from_secs(2)),
    );
    def(
        engine,
        "start",
        &["docker: Docker", "name: String", "options: Map", "()"],
        start_doc,
        |d: DockerHandle, name: &str, o: Map| {
            let o = Opts::new("docker start", o, &["settle"])?;
            d.start(name, settle_of(&o)?)
        },
    );
    def(
        engine,
        "restart",
        &["docker: Docker", "name: String", "()"],
        r#"
Restarts a container. Mutating; no undo (it runs before and after).

```rhai
let d = docker::on(cluster().host("web1"));
if d.running("app") { d.restart("app"); }
```"#,
        |d: DockerHandle, name: &str| -> R<()> {
            d.act(DockerOp::Restart {
                name: name.to_string(),
                timeout_s: None,
            })
            .map(|_| ())
        },
    );
    let rm_doc = r#"
Removes a container (`force: true` also when running). Mutating and not undoable: to keep the old
one for a rollback, stop and `rename` it instead.

```rhai
let d = docker::on(cluster().host("web1"));
if d.exists("app-old") { d.rm("app-old", #{ force: true }); }
```"#;
    def(
        engine,
        "rm",
        &["docker: Docker", "name: String", "()"],
        rm_doc,
        |d: DockerHandle, name: &str| -> R<()> {
            d.act(DockerOp::Rm {
                name: name.to_string(),
                force: false,
                missing_ok: false,
            })
            .map(|_| ())
        },
    );
    def(
        engine,
        "rm",
        &["docker: Docker", "name: String", "options: Map", "()"],
        rm_doc,
        |d: DockerHandle, name: &str, o: Map| -> R<()> {
            let o = Opts::new("docker rm", o, &["force"])?;
            d.act(DockerOp::Rm {
                name: name.to_string(),
                force: o.bool("force")?.unwrap_or(false),
                missing_ok: false,
            })
            .map(|_| ())
        },
    );
    def(
        engine,
        "rename",
        &["docker: Docker", "from: String", "to: String", "()"],
        r#"
Renames a container. Mutating; its undo renames it back.

```rhai
let d = docker::on(cluster().host("web1"));
if d.exists("app") { d.rename("app", "app-1.0.0"); }
```"#,
        |d: DockerHandle, from: &str, to: &str| d.rename(from, to),
    );

    let exec_doc = r#"
Runs a command in a running container (`docker exec`, argv, no shell unless you ask for one) and
returns `#{ code, signal, stdout, stderr, ok, skipped }`. A non-zero exit fails unless `allow_fail` (or
`ok_codes`). Options: `user`, `env`, `timeout`, `read_only: true` (runs under `--check`; say so
only for commands that change nothing). Mutating otherwise.

```rhai
let d = docker::on(cluster().host("web1"));
if d.running("app") { d.exec("app", ["sh", "/root/docker_init.sh"], #{ timeout: "10m" }); }
```"#;
    def(
        engine,
        "exec",
        &["docker: Docker", "name: String", "argv: Array", "Map"],
        exec_doc,
        |d: DockerHandle, name: &str, a: Array| {
            d.exec(name, argv("docker exec", &a)?, Opts::empty("docker exec"))
        },
    );
    def(
        engine,
        "exec",
        &[
            "docker: Docker",
            "name: String",
            "argv: Array",
            "options: Map",
            "Map",
        ],
        exec_doc,
        |d: DockerHandle, name: &str, a: Array, o: Map| {
            let o = Opts::new(
                "docker exec",
                o,
                &[
                    "user",
                    "env",
                    "timeout",
                    "allow_fail",
                    "ok_codes",
                    "read_only",
                ],
            )?;
            d.exec(name, argv("docker exec", &a)?, o)
        },
    );
    def(
        engine,
        "cp",
        &["docker: Docker", "from: String", "to: String", "()"],
        r#"
Copies files between the host and a container (`docker cp`; `CONTAINER:PATH` on one side).
Mutating; no undo.

```rhai
let d = docker::on(cluster().host("web1"));
if d.exists("app") { d.cp("app:/etc/app.conf", "/tmp/app.conf"); }
```"#,
        |d: DockerHandle, from: &str, to: &str| -> R<()> {
            d.act(DockerOp::Cp {
                from: from.to_string(),
                to: to.to_string(),
            })
            .map(|_| ())
        },
    );

    let logs_doc = r#"
A container's log (both streams, in docker's order), the last `tail` lines when given. Read-only.

```rhai
let d = docker::on(cluster().host("web1"));
if d.exists("app") { let last = d.logs("app", #{ tail: 20 }); }
```"#;
    def(
        engine,
        "logs",
        &["docker: Docker", "name: String", "String"],
        logs_doc,
        |d: DockerHandle, name: &str| d.logs_text(name, None),
    );
    def(
        engine,
        "logs",
        &["docker: Docker", "name: String", "options: Map", "String"],
        logs_doc,
        |d: DockerHandle, name: &str, o: Map| {
            let o = Opts::new("docker logs", o, &["tail"])?;
            d.logs_text(
                name,
                o.int("tail")?.map(|t| t.clamp(0, u32::MAX as i64) as u32),
            )
        },
    );
    let wait_log_doc = r#"
Waits until a line of the container's log contains `text` and returns that line. Bounded:
`timeout` (default 300 s), `every` (2 s), `tail` (the last 500 lines are searched). Fails at once,
with the last log lines, when the container stops meanwhile.

```rhai
let d = docker::on(cluster().host("web1"));
if d.running("app") { d.wait_log("app", "started", #{ timeout: 60 }); }
```"#;
    def(
        engine,
        "wait_log",
        &["docker: Docker", "name: String", "text: String", "String"],
        wait_log_doc,
        |ctx: NativeCallContext, d: DockerHandle, name: &str, text: &str| {
            d.wait_log(name, text, Opts::empty("docker wait_log"))
                .map_err(|e| at(e, ctx.call_position()))
        },
    );
    def(
        engine,
        "wait_log",
        &[
            "docker: Docker",
            "name: String",
            "text: String",
            "options: Map",
            "String",
        ],
        wait_log_doc,
        |ctx: NativeCallContext, d: DockerHandle, name: &str, text: &str, o: Map| {
            let o = Opts::new("docker wait_log", o, &["timeout", "every", "tail"])?;
            d.wait_log(name, text, o)
                .map_err(|e| at(e, ctx.call_position()))
        },
    );
    let wait_running_doc = r#"
Waits until the container runs (and, when it has a health check, is healthy). Bounded: `timeout`
(default 120 s), `every` (2 s).

```rhai
let d = docker::on(cluster().host("web1"));
if d.exists("app") { d.wait_running("app", #{ timeout: 30 }); }
```"#;
    def(
        engine,
        "wait_running",
        &["docker: Docker", "name: String", "()"],
        wait_running_doc,
        |ctx: NativeCallContext, d: DockerHandle, name: &str| {
            d.wait_running(name, Opts::empty("docker wait_running"))
                .map_err(|e| at(e, ctx.call_position()))
        },
    );
    def(
        engine,
        "wait_running",
        &["docker: Docker", "name: String", "options: Map", "()"],
        wait_running_doc,
        |ctx: NativeCallContext, d: DockerHandle, name: &str, o: Map| {
            let o = Opts::new("docker wait_running", o, &["timeout", "every"])?;
            d.wait_running(name, o)
                .map_err(|e| at(e, ctx.call_position()))
        },
    );
}
