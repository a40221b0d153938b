//! Docker on a host through its `docker` CLI: operations as data, run specs, and docker's own errors.

use std::collections::BTreeMap;

use crate::error::FaultKind;

/// How a container is started: the `docker run` options capstan understands. Read one off a
/// running container with `docker::on(h).spec_of(name)`, change what must change, run it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunSpec {
    pub image: String,
    pub name: String,
    /// `--net` (`host`, a network name); the daemon's default when absent.
    #[serde(default)]
    pub net: Option<String>,
    /// `-v SRC:DST[:OPTS]`, as docker prints them in `HostConfig.Binds`.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// `-e K=V` beyond the image's own environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub privileged: bool,
    /// `--pids-limit` (`-1`: unlimited).
    #[serde(default)]
    pub pids_limit: Option<i64>,
    /// `--ulimit NAME=SOFT:HARD`.
    #[serde(default)]
    pub ulimits: BTreeMap<String, String>,
    /// `--restart` policy (`always`, `unless-stopped`, `on-failure:3`).
    #[serde(default)]
    pub restart: Option<String>,
    /// `--entrypoint` (the program; its arguments go first in `args`).
    #[serde(default)]
    pub entrypoint: Option<String>,
    /// Arguments after the image (the command).
    #[serde(default)]
    pub args: Vec<String>,
    /// `-t` and `-i` (OMS runs its container with `-dit`).
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub interactive: bool,
}

impl RunSpec {
    /// `docker run -d ...` for this spec.
    pub fn argv(&self) -> Vec<String> {
        let mut a: Vec<String> = vec!["docker".into(), "run".into(), "-d".into()];
        if self.interactive {
            a.push("-i".into());
        }
        if self.tty {
            a.push("-t".into());
        }
        a.extend(["--name".into(), self.name.clone()]);
        if let Some(n) = &self.net {
            a.extend(["--net".into(), n.clone()]);
        }
        for v in &self.volumes {
            a.extend(["-v".into(), v.clone()]);
        }
        for (k, v) in &self.env {
            a.extend(["-e".into(), format!("{k}={v}")]);
        }
        if self.privileged {
            a.push("--privileged=true".into());
        }
        if let Some(p) = self.pids_limit {
            a.push(format!("--pids-limit={p}"));
        }
        for (k, v) in &self.ulimits {
            a.extend(["--ulimit".into(), format!("{k}={v}")]);
        }
        if let Some(r) = &self.restart {
            a.extend(["--restart".into(), r.clone()]);
        }
        if let Some(e) = &self.entrypoint {
            a.extend(["--entrypoint".into(), e.clone()]);
        }
        a.push(self.image.clone());
        a.extend(self.args.iter().cloned());
        a
    }
}

/// One docker operation on a host. Reads run under `--check`; the rest are recorded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "docker", rename_all = "snake_case")]
pub enum DockerOp {
    /// `docker version`: the CLI is there and the daemon answers.
    Version,
    Ps {
        #[serde(default)]
        filters: Vec<String>,
    },
    Inspect {
        name: String,
    },
    ImageInspect {
        image: String,
    },
    Images,
    Logs {
        name: String,
        tail: Option<u32>,
    },
    Load {
        tar: String,
    },
    Save {
        image: String,
        tar: String,
    },
    Run {
        spec: RunSpec,
    },
    Stop {
        name: String,
        timeout_s: Option<u32>,
    },
    Start {
        name: String,
    },
    Restart {
        name: String,
        timeout_s: Option<u32>,
    },
    /// `missing_ok`: a container that is not there counts as removed (undos).
    Rm {
        name: String,
        force: bool,
        #[serde(default)]
        missing_ok: bool,
    },
    /// `missing_ok`: nothing to do when `from` is not there (an undo of a rename that never ran).
    Rename {
        from: String,
        to: String,
        #[serde(default)]
        missing_ok: bool,
    },
    Exec {
        name: String,
        argv: Vec<String>,
        user: Option<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        read_only: bool,
    },
    Cp {
        from: String,
        to: String,
    },
}

impl DockerOp {
    pub fn is_read_only(&self) -> bool {
        match self {
            DockerOp::Version
            | DockerOp::Ps { .. }
            | DockerOp::Inspect { .. }
            | DockerOp::ImageInspect { .. }
            | DockerOp::Images
            | DockerOp::Logs { .. } => true,
            DockerOp::Exec { read_only, .. } => *read_only,
            _ => false,
        }
    }

    /// The action's operation name in plans, reports and scenario durations.
    pub fn op(&self) -> &'static str {
        match self {
            DockerOp::Version => "docker_version",
            DockerOp::Ps { .. } => "docker_ps",
            DockerOp::Inspect { .. } => "docker_inspect",
            DockerOp::ImageInspect { .. } => "docker_image_inspect",
            DockerOp::Images => "docker_images",
            DockerOp::Logs { .. } => "docker_logs",
            DockerOp::Load { .. } => "docker_load",
            DockerOp::Save { .. } => "docker_save",
            DockerOp::Run { .. } => "docker_run",
            DockerOp::Stop { .. } => "docker_stop",
            DockerOp::Start { .. } => "docker_start",
            DockerOp::Restart { .. } => "docker_restart",
            DockerOp::Rm { .. } => "docker_rm",
            DockerOp::Rename { .. } => "docker_rename",
            DockerOp::Exec { .. } => "docker_exec",
            DockerOp::Cp { .. } => "docker_cp",
        }
    }

    /// The command line that performs it. `logs` merges the container's two streams, as people
    /// read them.
    pub fn argv(&self) -> Vec<String> {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        match self {
            DockerOp::Version => s(&["docker", "version", "--format", "{{json .}}"]),
            DockerOp::Ps { filters } => {
                let mut a = s(&["docker", "ps", "-a", "--no-trunc", "--format", "{{json .}}"]);
                for f in filters {
                    a.extend(["--filter".into(), f.clone()]);
                }
                a
            }
            DockerOp::Inspect { name } => s(&["docker", "container", "inspect", name]),
            DockerOp::ImageInspect { image } => s(&["docker", "image", "inspect", image]),
            DockerOp::Images => s(&["docker", "images", "--no-trunc", "--format", "{{json .}}"]),
            DockerOp::Logs { name, tail } => {
                let mut a = s(&["sh", "-c", "exec docker logs \"$@\" 2>&1", "docker-logs"]);
                if let Some(t) = tail {
                    a.extend(["--tail".into(), t.to_string()]);
                }
                a.push(name.clone());
                a
            }
            DockerOp::Load { tar } => s(&["docker", "load", "-i", tar]),
            DockerOp::Save { image, tar } => s(&["docker", "save", "-o", tar, image]),
            DockerOp::Run { spec } => spec.argv(),
            DockerOp::Stop { name, timeout_s } | DockerOp::Restart { name, timeout_s } => {
                let verb = if matches!(self, DockerOp::Stop { .. }) {
                    "stop"
                } else {
                    "restart"
                };
                let mut a = s(&["docker", verb]);
                if let Some(t) = timeout_s {
                    a.extend(["--time".into(), t.to_string()]);
                }
                a.push(name.clone());
                a
            }
            DockerOp::Start { name } => s(&["docker", "start", name]),
            DockerOp::Rm { name, force, .. } => {
                let mut a = s(&["docker", "rm"]);
                if *force {
                    a.push("-f".into());
                }
                a.push(name.clone());
                a
            }
            DockerOp::Rename { from, to, .. } => s(&["docker", "rename", from, to]),
            DockerOp::Exec {
                name,
                argv,
                user,
                env,
                ..
            } => {
                let mut a = s(&["docker", "exec"]);
                if let Some(u) = user {
                    a.extend(["--user".into(), u.clone()]);
                }
                for (k, v) in env {
                    a.extend(["-e".into(), format!("{k}={v}")]);
                }
                a.push(name.clone());
                a.extend(argv.iter().cloned());
                a
            }
            DockerOp::Cp { from, to } => s(&["docker", "cp", from, to]),
        }
    }

    /// As plans show it.
    pub fn describe(&self) -> String {
        match self {
            DockerOp::Logs { name, tail } => match tail {
                Some(t) => format!("docker logs --tail {t} {name}"),
                None => format!("docker logs {name}"),
            },
            DockerOp::Version => "docker version".into(),
            other => crate::transport::Command::Argv(other.argv()).display(),
        }
    }
}

/// What docker's own message says went wrong: the reason scripts see (`e.reason`) and the kind.
pub fn classify(code: Option<i32>, stderr: &str) -> (FaultKind, &'static str) {
    let e = stderr.to_ascii_lowercase();
    let has = |p: &str| e.contains(p);
    if has("cannot connect to the docker daemon")
        || has("is the docker daemon running")
        || has("error during connect")
    {
        (FaultKind::Unreachable, "daemon")
    } else if has("permission denied while trying to connect") {
        (FaultKind::Action, "permission")
    } else if code == Some(127) || (has("docker") && has("not found") && !has("no such")) {
        (FaultKind::Action, "no_cli")
    } else if has("no such image")
        || has("unable to find image")
        || has("pull access denied")
        || has("repository does not exist")
    {
        (FaultKind::Action, "no_such_image")
    } else if has("no such container") || has("no such object") {
        (FaultKind::Action, "no_such_container")
    } else if has("is already in use by container") || has("conflict") {
        (FaultKind::Action, "name_in_use")
    } else if has("is not running") {
        (FaultKind::Action, "not_running")
    } else if has("no such file or directory") {
        (FaultKind::Action, "no_such_file")
    } else {
        (FaultKind::Action, "docker")
    }
}

/// Judges what the CLI answered: its output on success, `None` when the call succeeded by
/// finding nothing to do (a missing container it may miss), or a fault with docker's own message
/// and reason. (Real and simulated docker answer through the same judgement.)
pub fn judge(
    host: &str,
    op: &DockerOp,
    out: crate::transport::ExecOutput,
) -> Result<Option<crate::transport::ExecOutput>, crate::error::Fault> {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // `logs` merges both streams into stdout, docker's complaints included.
    let said = if matches!(op, DockerOp::Logs { .. }) {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        stderr.clone()
    };
    let failed = match op {
        // The command's own exit code passes through `docker exec`.
        DockerOp::Exec { .. } => exec_failed_in_docker(out.code, &stderr),
        _ => out.code != Some(0),
    };
    if !failed {
        return Ok(Some(out));
    }
    let (kind, reason) = classify(out.code, &said);
    let missing_ok = matches!(
        op,
        DockerOp::Rm {
            missing_ok: true,
            ..
        } | DockerOp::Rename {
            missing_ok: true,
            ..
        }
    );
    if missing_ok && reason == "no_such_container" {
        return Ok(None);
    }
    let msg = format!(
        "{host}: `{}` failed: {}",
        op.describe(),
        crate::error::last_lines(said.as_bytes(), 3)
    );
    let mut f = crate::error::Fault::new(kind, Some(host), msg).with_reason(reason);
    f.code = out.code.map(i64::from);
    Err(f)
}

/// Whether an `exec` failed in docker itself rather than in the command it ran (whose exit
/// code `exec` passes through).
pub fn exec_failed_in_docker(code: Option<i32>, stderr: &str) -> bool {
    let e = stderr.to_ascii_lowercase();
    e.contains("error response from daemon")
        || e.contains("cannot connect to the docker daemon")
        || e.contains("no such container")
        || (code == Some(127) && e.contains("docker"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_is_the_vendor_command_line() {
        let spec = RunSpec {
            image: "oms:4.2.9".into(),
            name: "oms".into(),
            net: Some("host".into()),
            volumes: vec!["/data/oms/logs:/home/admin/logs".into()],
            env: [("IS_UPGRADE".to_string(), "true".to_string())].into(),
            privileged: true,
            pids_limit: Some(-1),
            ulimits: [("nproc".to_string(), "65535:65535".to_string())].into(),
            tty: true,
            interactive: true,
            ..Default::default()
        };
        assert_eq!(
            spec.argv().join(" "),
            "docker run -d -i -t --name oms --net host -v /data/oms/logs:/home/admin/logs \
             -e IS_UPGRADE=true --privileged=true --pids-limit=-1 --ulimit nproc=65535:65535 oms:4.2.9"
        );
    }

    #[test]
    fn docker_messages_become_reasons() {
        let r = |code, e: &str| classify(Some(code), e).1;
        assert_eq!(
            r(1, "Error response from daemon: No such container: oms"),
            "no_such_container"
        );
        assert_eq!(r(1, "Error: No such object: oms"), "no_such_container");
        assert_eq!(r(125, "docker: Error response from daemon: Conflict. The container name \"/oms\" is already in use by container \"ab\"."), "name_in_use");
        assert_eq!(r(1, "Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?"), "daemon");
        assert_eq!(
            r(
                1,
                "permission denied while trying to connect to the Docker daemon socket"
            ),
            "permission"
        );
        assert_eq!(r(127, "sh: 1: docker: not found"), "no_cli");
        assert_eq!(
            r(125, "Unable to find image 'x:1' locally"),
            "no_such_image"
        );
        assert_eq!(
            r(1, "open /tmp/x.tar: no such file or directory"),
            "no_such_file"
        );
    }
}
