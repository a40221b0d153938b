//! OpenSSH's client configuration (`~/.ssh/config`, `-F FILE`) applied to the SSH hosts of an inventory; the inventory's own settings win.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh2_config::{HostParams, ParseRule, SshConfig};

use super::{expand_path, Auth, Hop, HostEntry, HostKeyPolicy, Inventory, TransportKind, BUILT_IN};
use crate::error::{Error, Located, Result};

/// Which OpenSSH client configuration to honour.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SshConfigSource {
    /// `~/.ssh/config` when it exists, then `/etc/ssh/ssh_config`, as `ssh` reads them.
    #[default]
    Default,
    /// This file only (`-F FILE`, or `ssh_config = "FILE"` in the inventory).
    File(PathBuf),
    /// None (`-F none`, or `ssh_config = false`).
    None,
}

/// A parsed configuration file, queried host by host.
struct ConfigFile {
    path: PathBuf,
    config: SshConfig,
}

/// What the configuration says for one host name, as far as capstan uses it.
#[derive(Debug, Default)]
struct Found {
    /// The file it came from, for `inventory show`.
    from: String,
    host_name: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    identity_files: Vec<PathBuf>,
    identities_only: Option<bool>,
    known_hosts: Option<PathBuf>,
    strict: Option<HostKeyPolicy>,
    connect_timeout: Option<Duration>,
    keepalive: Option<Duration>,
    proxy_jump: Option<Vec<String>>,
}

use super::home;

fn load(source: &SshConfigSource) -> Result<Vec<ConfigFile>> {
    let paths: Vec<(PathBuf, bool)> = match source {
        SshConfigSource::None => return Ok(Vec::new()),
        SshConfigSource::File(p) => vec![(p.clone(), true)],
        SshConfigSource::Default => {
            let mut v = Vec::new();
            if let Some(h) = home() {
                v.push((h.join(".ssh/config"), false));
            }
            v.push((PathBuf::from("/etc/ssh/ssh_config"), false));
            v
        }
    };
    let mut files = Vec::new();
    for (path, required) in paths {
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut config = SshConfig::default();
        if let Some(h) = home() {
            config = config.home_dir(h);
        }
        // Options capstan does not act on are kept (the three it reads itself are among them)
        // or skipped, never an error: the same file drives the operator's own `ssh`.
        let config = config
            .parse(
                &mut BufReader::new(f),
                ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS,
            )
            .map_err(|e| {
                Error::Config(Located::new(
                    format!("{}: not a valid ssh_config: {e}", path.display()),
                    None,
                ))
            })?;
        files.push(ConfigFile { path, config });
    }
    Ok(files)
}

/// The first value of an option capstan reads but the parser keeps as text.
fn unsupported<'a>(p: &'a HostParams, key: &str) -> Option<&'a str> {
    p.unsupported_fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .and_then(|(_, v)| v.first())
        .map(String::as_str)
}

fn yes(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "yes" | "true")
}

/// Looks `name` up in each file in turn; the first value found wins, as in `ssh`.
fn lookup(files: &[ConfigFile], name: &str) -> Result<Found> {
    let mut f = Found::default();
    let mut from = Vec::new();
    for file in files {
        let p = file.config.query(name);
        let before = format!("{f:?}");
        f.host_name = f.host_name.or(p.host_name.clone());
        f.port = f.port.or(p.port);
        f.user = f.user.or(p.user.clone());
        if f.identity_files.is_empty() {
            f.identity_files = p.identity_file.clone().unwrap_or_default();
        }
        if f.identities_only.is_none() {
            f.identities_only = unsupported(&p, "identitiesonly").map(yes);
        }
        if f.known_hosts.is_none() {
            f.known_hosts = unsupported(&p, "userknownhostsfile")
                .filter(|v| *v != "none")
                .map(|v| expand_path(v, Path::new("/")));
        }
        if f.strict.is_none() {
            f.strict = match unsupported(&p, "stricthostkeychecking") {
                None => None,
                Some(v) => Some(match v.to_ascii_lowercase().as_str() {
                    "yes" | "ask" => HostKeyPolicy::Strict,
                    // `no` accepts new keys in ssh too; capstan still refuses a changed one.
                    "accept-new" | "no" | "off" => HostKeyPolicy::AcceptNew,
                    other => {
                        return Err(Error::Config(Located::new(
                            format!(
                                "{}: StrictHostKeyChecking {other} for {name}: expected yes, accept-new, no or ask",
                                file.path.display()
                            ),
                            None,
                        )))
                    }
                }),
            };
        }
        f.connect_timeout = f.connect_timeout.or(p.connect_timeout);
        f.keepalive = f
            .keepalive
            .or(p.server_alive_interval.filter(|d| !d.is_zero()));
        f.proxy_jump = f.proxy_jump.or(p.proxy_jump.clone());
        if format!("{f:?}") != before {
            from.push(file.path.display().to_string());
        }
    }
    f.from = format!("ssh_config {}", from.join(" + "));
    if let Some(h) = &f.host_name {
        // `%h` is the name as given; the other tokens do not make sense to capstan.
        f.host_name = Some(h.replace("%h", name));
    }
    Ok(f)
}

/// Splits a hop as `ProxyJump` writes it: `[ssh://][user@]host[:port]`, IPv6 in brackets.
fn split_hop(spec: &str) -> std::result::Result<(Option<String>, String, Option<u16>), String> {
    let s = spec.strip_prefix("ssh://").unwrap_or(spec);
    let (user, rest) = match s.rsplit_once('@') {
        Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
        Some(_) => return Err(format!("`{spec}`: empty user before `@`")),
        None => (None, s),
    };
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (h, after) = r
            .split_once(']')
            .ok_or_else(|| format!("`{spec}`: `[` without `]`"))?;
        match after.strip_prefix(':') {
            Some(p) => (h.to_string(), Some(p)),
            None if after.is_empty() => (h.to_string(), None),
            None => return Err(format!("`{spec}`: unexpected `{after}` after the address")),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p)),
            _ => (rest.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("`{spec}`: no host"));
    }
    let port = port
        .map(|p| match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("`{spec}`: `{p}` is not a port")),
        })
        .transpose()?;
    Ok((user, host, port))
}

/// A hop as the inventory (or a `ProxyJump`) writes it, before any ssh_config lookup. What the
/// hop does not say comes from the host behind it: the `[defaults]` user, the known_hosts file
/// and policy, the timeouts, and its key or agent (never its password: a bastion is another
/// machine).
pub(crate) fn parse_hop(
    spec: &str,
    target: &HostEntry,
    default_user: Option<&str>,
) -> std::result::Result<Hop, String> {
    let (user, address, port) = split_hop(spec)?;
    let auth = match &target.auth {
        a @ (Auth::Key { .. } | Auth::Agent) => a.clone(),
        Auth::Password(_) | Auth::Default => Auth::Default,
    };
    Ok(Hop {
        spec: spec.to_string(),
        address,
        port: port.unwrap_or(22),
        user: user
            .or(default_user.map(str::to_string))
            .unwrap_or_else(super::current_user),
        auth,
        identity_files: Vec::new(),
        identities_only: false,
        known_hosts: target.known_hosts.clone(),
        host_key_policy: target.host_key_policy,
        connect_timeout: target.connect_timeout,
        keepalive: target.keepalive,
    })
}

/// Fills what `hop` did not say from the configuration for its host name.
fn apply_to_hop(files: &[ConfigFile], hop: &mut Hop) -> Result<()> {
    let (user, _, port) = split_hop(&hop.spec).map_err(|m| Error::Config(Located::new(m, None)))?;
    let name = hop.address.clone();
    let f = lookup(files, &name)?;
    if let Some(h) = f.host_name {
        hop.address = h;
    }
    if port.is_none() {
        if let Some(p) = f.port {
            hop.port = p;
        }
    }
    if user.is_none() {
        if let Some(u) = f.user {
            hop.user = u;
        }
    }
    if !f.identity_files.is_empty() {
        hop.auth = Auth::Default;
        hop.identity_files = f.identity_files;
    }
    hop.identities_only = f.identities_only.unwrap_or(hop.identities_only);
    if let Some(k) = f.known_hosts {
        hop.known_hosts = k;
    }
    if let Some(s) = f.strict {
        hop.host_key_policy = s;
    }
    if let Some(t) = f.connect_timeout {
        hop.connect_timeout = t;
    }
    if let Some(k) = f.keepalive {
        hop.keepalive = k;
    }
    Ok(())
}

/// Applies the configuration to one SSH host: settings the inventory left to the built-in
/// default take the file's value; `HostName` always resolves the name (it is an alias).
fn apply_to_host(
    files: &[ConfigFile],
    h: &mut HostEntry,
    default_user: Option<&str>,
) -> Result<()> {
    let f = lookup(files, &h.address)?;
    let from = f.from.clone();
    let unset = |h: &HostEntry, key: &str| h.origins.get(key).is_none_or(|o| o == BUILT_IN);
    let took = |h: &mut HostEntry, key: &'static str| {
        h.origins.insert(key, from.clone());
    };
    if let Some(a) = f.host_name {
        h.address = a;
        took(h, "address");
    }
    if let (true, Some(p)) = (unset(h, "port"), f.port) {
        h.port = p;
        took(h, "port");
    }
    if let (true, Some(u)) = (unset(h, "user"), f.user) {
        h.user = u;
        took(h, "user");
    }
    if let (true, Some(k)) = (unset(h, "known_hosts"), f.known_hosts) {
        h.known_hosts = k;
        took(h, "known_hosts");
    }
    if let (true, Some(s)) = (unset(h, "host_key_policy"), f.strict) {
        h.host_key_policy = s;
        took(h, "host_key_policy");
    }
    if let (true, Some(t)) = (unset(h, "connect_timeout"), f.connect_timeout) {
        h.connect_timeout = t;
        took(h, "connect_timeout");
    }
    if let (true, Some(k)) = (unset(h, "keepalive"), f.keepalive) {
        h.keepalive = k;
        took(h, "keepalive");
    }
    if unset(h, "auth") && (!f.identity_files.is_empty() || f.identities_only.is_some()) {
        h.identity_files = f.identity_files;
        h.identities_only = f.identities_only.unwrap_or(false);
        took(h, "auth");
    }
    if unset(h, "jump") {
        if let Some(list) = f.proxy_jump.filter(|l| !(l.len() == 1 && l[0] == "none")) {
            let mut hops = Vec::new();
            for spec in &list {
                hops.push(parse_hop(spec, h, default_user).map_err(|m| {
                    Error::Config(Located::new(
                        format!("{from}: ProxyJump for {}: {m}", h.name),
                        None,
                    ))
                })?);
            }
            h.jump = hops;
            took(h, "jump");
        }
    }
    for hop in &mut h.jump {
        apply_to_hop(files, hop)?;
    }
    Ok(())
}

impl Inventory {
    /// Honours OpenSSH's client configuration for the SSH hosts, as `ssh` would for the same
    /// names: `source` is the `-F` of the command line, or the inventory's own `ssh_config`
    /// when `None`. Settings the inventory gives win over the file's.
    pub fn apply_ssh_config(&mut self, source: Option<&SshConfigSource>) -> Result<()> {
        let source = source.unwrap_or(&self.ssh_config).clone();
        let files = load(&source)?;
        let default_user = self.default_user.clone();
        for h in &mut self.hosts {
            if h.transport != TransportKind::Ssh {
                continue;
            }
            if files.is_empty() {
                continue;
            }
            apply_to_host(&files, h, default_user.as_deref())?;
        }
        self.ssh_config = source;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_split_as_proxyjump_writes_them() {
        let ok = |s: &str| split_hop(s).unwrap();
        assert_eq!(ok("b1"), (None, "b1".into(), None));
        assert_eq!(
            ok("ops@b1:2222"),
            (Some("ops".into()), "b1".into(), Some(2222))
        );
        assert_eq!(ok("ssh://ops@b1"), (Some("ops".into()), "b1".into(), None));
        assert_eq!(ok("[::1]:22"), (None, "::1".into(), Some(22)));
        assert_eq!(ok("::1"), (None, "::1".into(), None));
        for bad in ["@b1", "b1:x", "b1:0", "[::1", ":22"] {
            assert!(split_hop(bad).is_err(), "{bad}");
        }
    }
}
