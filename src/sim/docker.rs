//! A simulated docker engine per host: images, containers, mounts and logs, answering as the CLI does.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::docker::{DockerOp, RunSpec};
use crate::transport::ExecOutput;

fn yes() -> bool {
    true
}

/// `[hosts.NAME.docker]` in a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DockerSpec {
    /// False: the CLI is there but the daemon does not answer.
    #[serde(default = "yes")]
    daemon: bool,
    #[serde(default)]
    images: Vec<ImageSpec>,
    #[serde(default)]
    containers: Vec<ContainerSpec>,
}

/// An image: `"oms:4.2.9"`, or a table with what it does when started.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum ImageSpec {
    Name(String),
    Full(ImageFull),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImageFull {
    name: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    cmd: Vec<String>,
    #[serde(default)]
    entrypoint: Vec<String>,
    /// Lines a container of this image logs when it starts.
    #[serde(default)]
    logs: Vec<String>,
    /// A container of this image exits right after it starts (with this code).
    exits: Option<i32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContainerSpec {
    name: String,
    image: String,
    #[serde(default = "yes")]
    running: bool,
    net: Option<String>,
    #[serde(default)]
    volumes: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    privileged: bool,
    pids_limit: Option<i64>,
    #[serde(default)]
    ulimits: BTreeMap<String, String>,
    #[serde(default)]
    args: Vec<String>,
    /// `-t` and `-i` (`docker run -dit`, as OMS is deployed).
    #[serde(default)]
    tty: bool,
    #[serde(default)]
    interactive: bool,
    #[serde(default)]
    logs: Vec<String>,
}

#[derive(Debug, Clone)]
struct Container {
    id: String,
    spec: RunSpec,
    running: bool,
    exit_code: i32,
    logs: Vec<String>,
}

/// One host's docker engine.
#[derive(Debug, Clone, Default)]
pub struct SimDocker {
    daemon: bool,
    images: BTreeMap<String, ImageFull>,
    containers: BTreeMap<String, Container>,
    next_id: u64,
}

fn out(code: i32, stdout: String, stderr: &str) -> ExecOutput {
    ExecOutput {
        code: Some(code),
        signal: None,
        stdout: stdout.into_bytes(),
        stderr: stderr.as_bytes().to_vec(),
        truncated: false,
    }
}

fn ok(stdout: String) -> ExecOutput {
    out(0, stdout, "")
}

fn no_container(name: &str) -> ExecOutput {
    out(
        1,
        String::new(),
        &format!("Error response from daemon: No such container: {name}"),
    )
}

/// `repo:tag`, with `latest` when no tag is given.
fn full_ref(image: &str) -> String {
    if image
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'))
    {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

impl SimDocker {
    pub(crate) fn from_spec(spec: Option<&DockerSpec>) -> SimDocker {
        let mut d = SimDocker {
            daemon: spec.is_none_or(|s| s.daemon),
            ..Default::default()
        };
        let Some(spec) = spec else { return d };
        for i in &spec.images {
            let img = match i {
                ImageSpec::Name(n) => ImageFull {
                    name: n.clone(),
                    ..Default::default()
                },
                ImageSpec::Full(f) => f.clone(),
            };
            d.images.insert(full_ref(&img.name), img);
        }
        for c in &spec.containers {
            let id = d.new_id();
            d.images
                .entry(full_ref(&c.image))
                .or_insert_with(|| ImageFull {
                    name: c.image.clone(),
                    ..Default::default()
                });
            d.containers.insert(
                c.name.clone(),
                Container {
                    id,
                    spec: RunSpec {
                        image: c.image.clone(),
                        name: c.name.clone(),
                        net: c.net.clone(),
                        volumes: c.volumes.clone(),
                        env: c.env.clone(),
                        privileged: c.privileged,
                        pids_limit: c.pids_limit,
                        ulimits: c.ulimits.clone(),
                        args: c.args.clone(),
                        tty: c.tty,
                        interactive: c.interactive,
                        ..Default::default()
                    },
                    running: c.running,
                    exit_code: 0,
                    logs: c.logs.clone(),
                },
            );
        }
        d
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("{:064x}", 0x5ca1ab1e_u64 * 1_000_003 + self.next_id)
    }

    /// How the engine differs from an earlier state of it, one sentence each.
    pub(crate) fn differences(&self, was: &SimDocker) -> Vec<String> {
        let mut out = Vec::new();
        for (name, c) in &self.containers {
            let state = if c.running { "running" } else { "stopped" };
            match was.containers.get(name) {
                None => out.push(format!(
                    "container {name} ({}) created, {state}",
                    c.spec.image
                )),
                Some(w) if w.id != c.id => out.push(format!(
                    "container {name} replaced ({} -> {}), {state}",
                    w.spec.image, c.spec.image
                )),
                Some(w) if w.running != c.running => out.push(format!("container {name} {state}")),
                _ => {}
            }
        }
        for (name, w) in &was.containers {
            if !self.containers.contains_key(name) {
                out.push(format!("container {name} ({}) removed", w.spec.image));
            }
        }
        for i in self.images.keys().filter(|i| !was.images.contains_key(*i)) {
            out.push(format!("image {i} loaded"));
        }
        out
    }

    /// The containers that run: name, image and the environment they were started with.
    pub(crate) fn running(&self) -> Vec<(String, String, BTreeMap<String, String>)> {
        self.containers
            .iter()
            .filter(|(_, c)| c.running)
            .map(|(n, c)| (n.clone(), c.spec.image.clone(), c.spec.env.clone()))
            .collect()
    }

    /// The image a container (running or not) was created from.
    pub(crate) fn image_of(&self, name: &str) -> Option<&str> {
        self.containers.get(name).map(|c| c.spec.image.as_str())
    }

    /// Lines appended to a container's log (a simulated `docker exec` that prints to it).
    pub(crate) fn append_log(&mut self, name: &str, lines: &[String]) {
        if let Some(c) = self.containers.get_mut(name) {
            c.logs.extend(lines.iter().cloned());
        }
    }

    /// Answers one operation as the docker CLI would. `files` and `dirs` are the host's file tree
    /// (image tars are files listing the images they hold, one per line).
    pub(crate) fn apply(
        &mut self,
        op: &DockerOp,
        files: &mut BTreeMap<String, Vec<u8>>,
        dirs: &BTreeSet<String>,
    ) -> ExecOutput {
        if !self.daemon {
            return out(
                1,
                String::new(),
                "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
            );
        }
        match op {
            DockerOp::Version => ok(
                json!({"Client": {"Version": "sim"}, "Server": {"Version": "sim"}}).to_string()
                    + "\n",
            ),
            DockerOp::Ps { filters } => {
                let mut lines = String::new();
                for (name, c) in &self.containers {
                    let keep = filters.iter().all(|f| match f.split_once('=') {
                        Some(("name", n)) => name.contains(n.trim_start_matches('^').trim_end_matches('$')),
                        Some(("status", s)) => (s == "running") == c.running,
                        Some(("ancestor", i)) => full_ref(&c.spec.image) == full_ref(i),
                        _ => true,
                    });
                    if keep {
                        lines.push_str(&self.ps_line(name, c).to_string());
                        lines.push('\n');
                    }
                }
                ok(lines)
            }
            DockerOp::Inspect { name } => match self.containers.get(name) {
                Some(c) => ok(json!([self.inspect(name, c)]).to_string()),
                // What docker 28 answers `docker container inspect` of a missing container.
                None => out(1, "[]".into(), &format!("Error response from daemon: No such container: {name}")),
            },
            DockerOp::ImageInspect { image } => match self.images.get(&full_ref(image)) {
                Some(i) => ok(json!([{
                    "Id": format!("sha256:{:064x}", i.name.len()),
                    "RepoTags": [full_ref(&i.name)],
                    "Config": {
                        "Env": env_list(&i.env),
                        "Cmd": i.cmd,
                        "Entrypoint": if i.entrypoint.is_empty() { Value::Null } else { json!(i.entrypoint) },
                    }
                }])
                .to_string()),
                None => out(1, "[]".into(), &format!("Error: No such image: {image}")),
            },
            DockerOp::Images => {
                let mut lines = String::new();
                for r in self.images.keys() {
                    let (repo, tag) = r.rsplit_once(':').unwrap_or((r, "latest"));
                    lines.push_str(
                        &json!({"Repository": repo, "Tag": tag, "ID": format!("sha256:{:064x}", r.len()), "Size": "10MB"})
                            .to_string(),
                    );
                    lines.push('\n');
                }
                ok(lines)
            }
            DockerOp::Logs { name, tail } => match self.containers.get(name) {
                Some(c) => {
                    let n = tail.map_or(c.logs.len(), |t| t as usize);
                    let lines = &c.logs[c.logs.len().saturating_sub(n)..];
                    ok(lines.iter().map(|l| format!("{l}\n")).collect())
                }
                None => out(
                    1,
                    format!("Error response from daemon: No such container: {name}\n"),
                    "",
                ),
            },
            DockerOp::Load { tar } => match files.get(tar.trim_end_matches('/')) {
                Some(b) => {
                    let names: Vec<String> = String::from_utf8_lossy(b)
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_string)
                        .collect();
                    let mut said = String::new();
                    for n in names {
                        said.push_str(&format!("Loaded image: {}\n", full_ref(&n)));
                        self.images.entry(full_ref(&n)).or_insert(ImageFull {
                            name: n,
                            ..Default::default()
                        });
                    }
                    ok(said)
                }
                None => out(1, String::new(), &format!("open {tar}: no such file or directory")),
            },
            DockerOp::Save { image, tar } => {
                if !self.images.contains_key(&full_ref(image)) {
                    return out(1, String::new(), &format!("Error response from daemon: No such image: {image}"));
                }
                files.insert(tar.clone(), format!("{}\n", full_ref(image)).into_bytes());
                ok(String::new())
            }
            DockerOp::Run { spec } => {
                if self.containers.contains_key(&spec.name) {
                    return out(125, String::new(), &format!(
                        "docker: Error response from daemon: Conflict. The container name \"/{}\" is already in use by container \"{}\".",
                        spec.name, self.containers[&spec.name].id
                    ));
                }
                let Some(img) = self.images.get(&full_ref(&spec.image)).cloned() else {
                    return out(125, String::new(), &format!(
                        "Unable to find image '{}' locally\ndocker: Error response from daemon: pull access denied for {}, repository does not exist or may require 'docker login'.",
                        spec.image, spec.image
                    ));
                };
                let id = self.new_id();
                self.containers.insert(
                    spec.name.clone(),
                    Container {
                        id: id.clone(),
                        spec: spec.clone(),
                        running: img.exits.is_none(),
                        exit_code: img.exits.unwrap_or(0),
                        logs: img.logs.clone(),
                    },
                );
                ok(format!("{id}\n"))
            }
            DockerOp::Stop { name, .. } => match self.containers.get_mut(name) {
                Some(c) => {
                    c.running = false;
                    ok(format!("{name}\n"))
                }
                None => no_container(name),
            },
            DockerOp::Start { name } | DockerOp::Restart { name, .. } => {
                let images = &self.images;
                match self.containers.get_mut(name) {
                    Some(c) => {
                        let img = images.get(&full_ref(&c.spec.image));
                        c.running = img.is_none_or(|i| i.exits.is_none());
                        if let Some(i) = img {
                            c.logs.extend(i.logs.iter().cloned());
                            c.exit_code = i.exits.unwrap_or(0);
                        }
                        ok(format!("{name}\n"))
                    }
                    None => no_container(name),
                }
            }
            DockerOp::Rm { name, force, .. } => match self.containers.get(name) {
                Some(c) if c.running && !force => out(1, String::new(), &format!(
                    "Error response from daemon: cannot remove container \"/{name}\": container is running: stop the container before removing or force remove"
                )),
                Some(_) => {
                    self.containers.remove(name);
                    ok(format!("{name}\n"))
                }
                // docker 28: `rm -f` of a container that is not there prints the error and exits 0.
                None if *force => out(0, String::new(), &format!("Error response from daemon: No such container: {name}")),
                None => no_container(name),
            },
            DockerOp::Rename { from, to, .. } => {
                if self.containers.contains_key(to) {
                    return out(1, String::new(), &format!(
                        "Error response from daemon: Conflict. The container name \"/{to}\" is already in use by container \"{}\".",
                        self.containers[to].id
                    ));
                }
                match self.containers.remove(from) {
                    Some(mut c) => {
                        c.spec.name = to.clone();
                        self.containers.insert(to.clone(), c);
                        ok(String::new())
                    }
                    None => no_container(from),
                }
            }
            DockerOp::Exec { name, .. } => match self.containers.get(name) {
                Some(c) if !c.running => out(1, String::new(), &format!(
                    "Error response from daemon: container {} is not running", c.id
                )),
                Some(_) => ok(String::new()),
                None => no_container(name),
            },
            DockerOp::Cp { from, to } => {
                let container = |p: &str| p.split_once(':').map(|(c, _)| c.to_string());
                for c in [container(from), container(to)].into_iter().flatten() {
                    if !self.containers.contains_key(&c) {
                        return no_container(&c);
                    }
                }
                // A file under a bind mount is the host's file; what the image holds is its
                // product model's to answer.
                let (src, dest) = (self.host_path(from), self.host_path(to));
                if let (Some(src), Some(mut dest)) = (src, dest) {
                    // Into a directory: under the source's own name, as `docker cp` does.
                    if dirs.contains(&dest) {
                        let name = src.rsplit('/').next().unwrap_or(&src);
                        dest = format!("{dest}/{name}");
                    }
                    match files.get(&src).cloned() {
                        Some(body) => {
                            files.insert(dest, body);
                        }
                        None => {
                            return out(1, String::new(), &match from.split_once(':') {
                                Some((c, p)) => format!("Error response from daemon: Could not find the file {p} in container {c}"),
                                None => format!("lstat {src}: no such file or directory"),
                            })
                        }
                    }
                }
                ok(String::new())
            }
        }
    }

    /// A `docker cp` side as a host path: a host path as it is, `CONTAINER:PATH` through the
    /// container's bind mounts (`None` when the path is in the image, not under a mount).
    fn host_path(&self, side: &str) -> Option<String> {
        let Some((name, path)) = side.split_once(':') else {
            return Some(side.trim_end_matches('/').to_string());
        };
        let c = self.containers.get(name)?;
        c.spec.volumes.iter().find_map(|v| {
            let mut parts = v.split(':');
            let (src, dest) = (parts.next()?, parts.next()?);
            if path == dest {
                Some(src.to_string())
            } else {
                path.strip_prefix(dest)
                    .filter(|rest| rest.starts_with('/'))
                    .map(|rest| format!("{src}{rest}"))
            }
        })
    }

    fn ps_line(&self, name: &str, c: &Container) -> Value {
        json!({
            "ID": c.id,
            "Names": name,
            "Image": c.spec.image,
            "State": if c.running { "running" } else { "exited" },
            "Status": if c.running { "Up".to_string() } else { format!("Exited ({})", c.exit_code) },
            "Mounts": c.spec.volumes.iter().map(|v| v.split(':').next().unwrap_or("")).collect::<Vec<_>>().join(","),
            "Ports": "",
            "Labels": "",
            "CreatedAt": "",
        })
    }

    fn inspect(&self, name: &str, c: &Container) -> Value {
        let img = self.images.get(&full_ref(&c.spec.image));
        let mut env = img.map(|i| i.env.clone()).unwrap_or_default();
        env.extend(c.spec.env.clone());
        let (entrypoint, cmd) = match &c.spec.entrypoint {
            Some(e) => (json!([e]), json!(c.spec.args)),
            None => (
                img.filter(|i| !i.entrypoint.is_empty())
                    .map_or(Value::Null, |i| json!(i.entrypoint)),
                if c.spec.args.is_empty() {
                    json!(img.map(|i| i.cmd.clone()).unwrap_or_default())
                } else {
                    json!(c.spec.args)
                },
            ),
        };
        let mounts: Vec<Value> = c
            .spec
            .volumes
            .iter()
            .map(|v| {
                let mut p = v.splitn(3, ':');
                let src = p.next().unwrap_or("");
                let dst = p.next().unwrap_or("");
                let mode = p.next().unwrap_or("");
                json!({"Type": "bind", "Source": src, "Destination": dst, "Mode": mode, "RW": !mode.contains("ro")})
            })
            .collect();
        json!({
            "Id": c.id,
            "Name": format!("/{name}"),
            "State": {
                "Status": if c.running { "running" } else { "exited" },
                "Running": c.running,
                "ExitCode": c.exit_code,
            },
            "Config": {
                "Image": c.spec.image,
                "Env": env_list(&env),
                "Cmd": cmd,
                "Entrypoint": entrypoint,
                "Tty": c.spec.tty,
                "OpenStdin": c.spec.interactive,
            },
            "HostConfig": {
                "Binds": c.spec.volumes,
                "NetworkMode": c.spec.net.clone().unwrap_or_else(|| "bridge".into()),
                "Privileged": c.spec.privileged,
                "PidsLimit": c.spec.pids_limit,
                "Ulimits": c.spec.ulimits.iter().map(|(k, v)| {
                    let (s, h) = v.split_once(':').unwrap_or((v, v));
                    json!({"Name": k, "Soft": s.parse::<i64>().unwrap_or(0), "Hard": h.parse::<i64>().unwrap_or(0)})
                }).collect::<Vec<_>>(),
                "RestartPolicy": {"Name": c.spec.restart.clone().unwrap_or_else(|| "no".into())},
            },
            "Mounts": mounts,
        })
    }
}

fn env_list(env: &BTreeMap<String, String>) -> Vec<String> {
    env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}
