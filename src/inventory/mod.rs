//! The inventory: hosts, groups, vars and connection settings, read from TOML with positioned errors.

mod ansible;
mod ssh_config;
mod toml_pos;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::error::{Error, Located, Result};
use crate::secret::{Redactor, Secret, SecretRef};

pub use ansible::{
    convert as convert_ansible, format_of as ansible_format, AnsibleFormat, Converted,
};
pub use ssh_config::SshConfigSource;
pub(crate) use toml_pos::config_error;

/// How capstan reaches a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// Processes on the machine capstan runs on.
    Local,
    /// A command channel per action over one SSH session per host.
    Ssh,
}

/// What to do with a host key that `known_hosts` does not list yet. A *changed* key is always refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// Refuse unknown keys (the default).
    Strict,
    /// Accept and record a key seen for the first time.
    AcceptNew,
}

/// A duration written as `"10s"`, `"5m"`, `"1h 30m"` or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Secs(s)) => Ok(Dur(Duration::from_secs(s))),
            Ok(Raw::Text(t)) => parse_duration(&t)
                .map(Dur)
                .map_err(serde::de::Error::custom),
            Err(_) => Err(serde::de::Error::custom(
                "expected a duration such as \"30s\", \"5m\" or a number of seconds",
            )),
        }
    }
}

/// Parses `"10s"`, `"250ms"`, `"1h 30m"`; a bare number means seconds.
pub fn parse_duration(t: &str) -> std::result::Result<Duration, String> {
    let t = t.trim();
    if let Ok(secs) = t.parse::<f64>() {
        if secs >= 0.0 && secs.is_finite() {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(t).map_err(|e| format!("invalid duration {t:?}: {e}"))
}

/// Authentication as written in the inventory: exactly one method.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSpec {
    key: Option<String>,
    passphrase: Option<SecretRef>,
    agent: Option<bool>,
    password: Option<SecretRef>,
}

/// Fields shared by `[defaults]` and `[hosts.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostFields {
    address: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    transport: Option<TransportKind>,
    auth: Option<Spanned<AuthSpec>>,
    known_hosts: Option<String>,
    host_key_policy: Option<HostKeyPolicy>,
    connect_timeout: Option<Dur>,
    command_timeout: Option<Dur>,
    keepalive: Option<Dur>,
    /// Bastions to go through, in order: `"bastion"`, `"ops@b1:2222,b2"` or an array.
    jump: Option<Spanned<JumpList>>,
    /// Run every command through `sudo`: `true` (as root) or the user to become.
    #[serde(rename = "become")]
    become_: Option<Spanned<BecomeKey>>,
    /// The login user's sudo password, when sudo asks for one: a secret reference.
    become_password: Option<Spanned<SecretRef>>,
    /// The maintenance lock on the host: `true` (the default place), `false`, or its directory.
    host_lock: Option<HostLockKey>,
    /// How long a host lock outlives its run's last renewal (default 5m).
    host_lock_lease: Option<Dur>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    #[serde(default)]
    vars: toml::Table,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupSpec {
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
    /// Bastions for the group's hosts (a host's own `jump` wins).
    jump: Option<Spanned<JumpList>>,
    /// `become` for the group's hosts (a host's own wins).
    #[serde(rename = "become")]
    become_: Option<Spanned<BecomeKey>>,
    #[serde(default)]
    vars: toml::Table,
}

/// `host_lock = true` (the host's `CAPSTAN_HOST_LOCK`, else `hostlock::DEFAULT_DIR`), `false`,
/// or the absolute path of the lock directory.
#[derive(Debug, Clone)]
struct HostLockKey(Option<String>);

impl<'de> Deserialize<'de> for HostLockKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Dir(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Flag(on)) => Ok(HostLockKey(on.then(String::new))),
            Ok(Raw::Dir(p)) if p.starts_with('/') && p.len() > 1 => Ok(HostLockKey(Some(p))),
            _ => Err(serde::de::Error::custom(
                "expected true (the default place), false, or the absolute path of the lock directory",
            )),
        }
    }
}

/// `become = true` (root), `false`, or the name of the user to become.
#[derive(Debug, Clone)]
enum BecomeKey {
    Off,
    As(String),
}

impl<'de> Deserialize<'de> for BecomeKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            User(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Flag(true)) => Ok(BecomeKey::As("root".into())),
            Ok(Raw::Flag(false)) => Ok(BecomeKey::Off),
            Ok(Raw::User(u)) if !u.trim().is_empty() => Ok(BecomeKey::As(u)),
            _ => Err(serde::de::Error::custom(
                "expected true (become root through sudo), false, or the name of the user to become",
            )),
        }
    }
}

/// Privilege for every command on a host: `sudo -u USER`, with the login's password when sudo
/// asks for one (sent on stdin, never in argv, environment or output).
#[derive(Debug, Clone)]
pub struct Become {
    pub user: String,
    pub password: Option<Secret>,
}

/// A `jump` value: one string of comma-separated hops, as `ProxyJump` takes, or an array.
/// `"none"` (or `[]`) means a direct connection, whatever `~/.ssh/config` says.
#[derive(Debug, Clone, Default)]
struct JumpList(Vec<String>);

impl<'de> Deserialize<'de> for JumpList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let hops: Vec<String> = match Raw::deserialize(d) {
            Ok(Raw::One(s)) => s.split(',').map(|x| x.trim().to_string()).collect(),
            Ok(Raw::Many(v)) => v.into_iter().map(|x| x.trim().to_string()).collect(),
            Err(_) => {
                return Err(serde::de::Error::custom(
                    "expected a bastion such as \"ops@bastion:22\", a comma-separated list or an array of them",
                ))
            }
        };
        if hops.len() == 1 && hops[0] == "none" {
            return Ok(JumpList(Vec::new()));
        }
        if hops.iter().any(|h| h.is_empty() || h == "none") {
            return Err(serde::de::Error::custom(
                "an empty bastion (or `none` among others) in the jump list",
            ));
        }
        Ok(JumpList(hops))
    }
}

/// Where `~/.ssh/config` is, as the inventory says: a path, or `false` to read none.
#[derive(Debug, Clone)]
struct SshConfigKey(SshConfigSource);

impl<'de> Deserialize<'de> for SshConfigKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Path(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Flag(false)) => Ok(SshConfigKey(SshConfigSource::None)),
            Ok(Raw::Flag(true)) => Ok(SshConfigKey(SshConfigSource::Default)),
            Ok(Raw::Path(p)) => Ok(SshConfigKey(SshConfigSource::File(PathBuf::from(p)))),
            Err(_) => Err(serde::de::Error::custom(
                "expected the path of an ssh_config file, or false to read none",
            )),
        }
    }
}

/// The inventory file as written. Also embedded in scenario files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventorySpec {
    /// OpenSSH client configuration to honour: a path, `false` for none; `~/.ssh/config` when absent.
    ssh_config: Option<Spanned<SshConfigKey>>,
    #[serde(default)]
    defaults: HostFields,
    #[serde(default)]
    groups: BTreeMap<String, GroupSpec>,
    hosts: Spanned<BTreeMap<String, Spanned<HostFields>>>,
    /// Named secrets scripts read with `secret("name")`: references only, never inline values.
    #[serde(default)]
    secrets: BTreeMap<String, Spanned<SecretRef>>,
}

/// A host's authentication, secrets resolved.
#[derive(Debug, Clone)]
pub enum Auth {
    Key {
        path: PathBuf,
        passphrase: Option<Secret>,
    },
    Agent,
    Password(Secret),
    /// None given: the SSH agent if there is one, then `~/.ssh/id_ed25519`, `~/.ssh/id_rsa`.
    Default,
}

/// A bastion on the way to a host (`jump`, or `ProxyJump` in `~/.ssh/config`): the target's
/// session rides a `direct-tcpip` channel of the bastion's own session.
#[derive(Debug, Clone)]
pub struct Hop {
    /// The hop as written (`ops@bastion:2222`), for messages.
    pub spec: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    pub auth: Auth,
    /// Keys to offer when `auth` is the default (from `IdentityFile`), before the usual ones.
    pub identity_files: Vec<PathBuf>,
    /// `IdentitiesOnly yes`: offer only `identity_files`, never the agent's keys.
    pub identities_only: bool,
    pub known_hosts: PathBuf,
    pub host_key_policy: HostKeyPolicy,
    pub connect_timeout: Duration,
    pub keepalive: Duration,
}

impl Hop {
    /// `user@address:port`: the hop's identity, shared by every host behind it.
    pub fn key(&self) -> String {
        format!("{}@{}:{}", self.user, self.address, self.port)
    }
}

/// One host, every setting resolved.
#[derive(Debug, Clone)]
pub struct HostEntry {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    pub transport: TransportKind,
    pub auth: Auth,
    pub known_hosts: PathBuf,
    pub host_key_policy: HostKeyPolicy,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub keepalive: Duration,
    /// Bastions to go through, first to last; empty for a direct connection.
    pub jump: Vec<Hop>,
    /// `sudo` for every command, file write and undo on the host (`become`).
    pub become_: Option<Become>,
    /// The login's sudo password (`become_password`), also for `h.become()` in scripts.
    pub become_password: Option<Secret>,
    /// Keys to offer when `auth` is the default (from `IdentityFile`), before the usual ones.
    pub identity_files: Vec<PathBuf>,
    /// `IdentitiesOnly yes`: offer only `identity_files`, never the agent's keys.
    pub identities_only: bool,
    /// Where each connection setting came from: `hosts.NAME`, `defaults`, `groups.NAME`,
    /// `ssh_config FILE` or `built-in` (`capstan inventory show`).
    pub origins: BTreeMap<&'static str, String>,
    /// Group names in the order given (host's own list first, then groups that list the host).
    pub groups: Vec<String>,
    /// Vars after merging: defaults, then each group in order, then the host's own.
    pub vars: BTreeMap<String, serde_json::Value>,
    /// The maintenance lock's directory on the host: `None` off, `Some("")` the host's
    /// `CAPSTAN_HOST_LOCK` or `hostlock::DEFAULT_DIR` (SSH hosts only).
    pub host_lock: Option<String>,
    /// How long the lock outlives the run's last renewal (a killed run's lock expires then).
    pub host_lock_lease: Duration,
}

/// The resolved inventory.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Where it came from (a file name, or `<inline>`), for messages.
    pub source: String,
    pub hosts: Vec<HostEntry>,
    /// Group name → member host names, in inventory order.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Named secrets from `[secrets]`, resolved; every value is also known to the redactor.
    pub secrets: BTreeMap<String, Secret>,
    /// The file it was read from, when it was read from a file (resume and rollback reread it).
    pub path: Option<PathBuf>,
    pub redactor: Redactor,
    /// The OpenSSH client configuration the inventory asks for (`ssh_config`); applied by
    /// [`Inventory::apply_ssh_config`], which the CLI calls for runs against real hosts.
    pub ssh_config: SshConfigSource,
    /// `[defaults] user`, when given: the login on a bastion whose hop names no user.
    default_user: Option<String>,
    /// Host name → position in `hosts`: every action looks its host up.
    index: crate::FastMap<String, usize>,
}

/// The user's home: `$HOME`, else the password database's (etcetera, over std's `home_dir`).
pub fn home() -> Option<PathBuf> {
    etcetera::home_dir().ok()
}

/// Expands `~` and `~/` (not `~user`) and makes a relative path relative to `base`.
pub fn expand_path(p: &str, base: &Path) -> PathBuf {
    let tilde = p == "~" || p.starts_with("~/");
    if let (true, Some(home)) = (tilde, home()) {
        return home.join(p[1..].trim_start_matches('/'));
    }
    let pb = PathBuf::from(p);
    if pb.is_absolute() {
        pb
    } else {
        base.join(pb)
    }
}

fn current_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".into())
}

impl Inventory {
    /// Reads and validates an inventory file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let file = path.display().to_string();
        let mut inv = match ansible::format_of(path) {
            // An Ansible inventory (`hosts.ini`, `hosts.yml`) is read as the TOML it converts to;
            // what it sets that capstan cannot use is named, never dropped silently.
            Some(format) => {
                let c = ansible::convert(&text, &file, format)?;
                for u in &c.unmapped {
                    tracing::warn!("{file}: not used by capstan: {u}");
                }
                Self::from_str_at(&c.toml, &format!("{file} (as converted)"), base)?
            }
            None => Self::from_str_at(&text, &file, base)?,
        };
        inv.path = Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()));
        Ok(inv)
    }

    /// The name of the `[secrets]` entry whose value is exactly `value`, if any.
    pub fn secret_name(&self, value: &str) -> Option<&str> {
        self.secrets
            .iter()
            .find(|(_, s)| s.expose() == value)
            .map(|(n, _)| n.as_str())
    }

    /// Parses inventory TOML; `file` names it in errors, `base` anchors relative paths.
    pub fn from_str_at(text: &str, file: &str, base: &Path) -> Result<Self> {
        let spec: InventorySpec =
            toml::from_str(text).map_err(|e| config_error(file, text, e.span(), e.message()))?;
        spec.resolve(file, text, base)
    }

    /// A single `local` host, for playbooks run without an inventory.
    pub fn localhost() -> Self {
        let text = "[hosts.localhost]\ntransport = \"local\"\n";
        Self::from_str_at(text, "<localhost>", Path::new("."))
            .expect("the built-in localhost inventory is valid")
    }

    pub fn host(&self, name: &str) -> Option<&HostEntry> {
        // `hosts` is public: trust the index only when it still points at that name.
        match self.index.get(name).and_then(|&i| self.hosts.get(i)) {
            Some(h) if h.name == name => Some(h),
            _ => self.hosts.iter().find(|h| h.name == name),
        }
    }

    pub fn host_names(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.name.clone()).collect()
    }

    /// A stable identity for journals and locks: the sorted host names and addresses.
    pub fn identity(&self) -> String {
        let mut v: Vec<String> = self
            .hosts
            .iter()
            .map(|h| format!("{}={}:{}", h.name, h.address, h.port))
            .collect();
        v.sort();
        v.join(",")
    }
}

impl InventorySpec {
    /// Validates the spec and resolves secrets. `text` is the file the spec was read from.
    pub(crate) fn resolve(self, file: &str, text: &str, base: &Path) -> Result<Inventory> {
        let err = |span: std::ops::Range<usize>, msg: String| -> Error {
            config_error(file, text, Some(span), &msg)
        };
        let redactor = Redactor::default();
        let hosts_span = self.hosts.span();
        let hosts_map = self.hosts.into_inner();
        if hosts_map.is_empty() {
            return Err(err(hosts_span, "the inventory lists no hosts".into()));
        }
        // Group members named in [groups.X].hosts.
        let mut group_members: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (g, spec) in &self.groups {
            check_name("group", g).map_err(|m| Error::Config(Located::new(m, None)))?;
            for h in &spec.hosts {
                if !hosts_map.contains_key(h.get_ref()) {
                    return Err(err(
                        h.span(),
                        format!("groups.{g}.hosts: unknown host `{}`", h.get_ref()),
                    ));
                }
            }
            group_members.entry(g.clone()).or_default();
        }

        let mut hosts = Vec::new();
        for (name, spanned) in hosts_map {
            let span = spanned.span();
            if let Err(m) = check_name("host", &name) {
                return Err(err(span, m));
            }
            let h = spanned.into_inner();
            let d = &self.defaults;
            let transport = h.transport.or(d.transport).unwrap_or(TransportKind::Ssh);
            let mut groups: Vec<String> = Vec::new();
            for g in d.groups.iter().chain(h.groups.iter()) {
                check_name("group", g.get_ref()).map_err(|m| err(g.span(), m))?;
                if !groups.contains(g.get_ref()) {
                    groups.push(g.get_ref().clone());
                }
            }
            for (g, spec) in &self.groups {
                if spec.hosts.iter().any(|x| x.get_ref() == &name) && !groups.contains(g) {
                    groups.push(g.clone());
                }
            }
            let auth_spec = h.auth.as_ref().or(d.auth.as_ref());
            let auth = match auth_spec {
                None => Auth::Default,
                Some(a) => {
                    let at = a.span();
                    resolve_auth(a.get_ref(), base, &redactor)
                        .map_err(|m| err(at, format!("hosts.{name}.auth: {m}")))?
                }
            };
            let mut vars = BTreeMap::new();
            let mut merge = |t: &toml::Table| {
                for (k, v) in t {
                    vars.insert(k.clone(), toml_to_json(v));
                }
            };
            merge(&d.vars);
            for g in &groups {
                if let Some(spec) = self.groups.get(g) {
                    merge(&spec.vars);
                }
            }
            merge(&h.vars);
            let known = h
                .known_hosts
                .as_deref()
                .or(d.known_hosts.as_deref())
                .unwrap_or("~/.ssh/known_hosts");
            // Where each connection setting came from: the host, then [defaults], else built in.
            let mut origins = BTreeMap::new();
            for (key, own, def) in [
                ("address", h.address.is_some(), d.address.is_some()),
                ("port", h.port.is_some(), d.port.is_some()),
                ("user", h.user.is_some(), d.user.is_some()),
                ("auth", h.auth.is_some(), d.auth.is_some()),
                (
                    "known_hosts",
                    h.known_hosts.is_some(),
                    d.known_hosts.is_some(),
                ),
                (
                    "host_key_policy",
                    h.host_key_policy.is_some(),
                    d.host_key_policy.is_some(),
                ),
                (
                    "connect_timeout",
                    h.connect_timeout.is_some(),
                    d.connect_timeout.is_some(),
                ),
                ("keepalive", h.keepalive.is_some(), d.keepalive.is_some()),
                ("host_lock", h.host_lock.is_some(), d.host_lock.is_some()),
                (
                    "host_lock_lease",
                    h.host_lock_lease.is_some(),
                    d.host_lock_lease.is_some(),
                ),
            ] {
                let from = if own {
                    format!("hosts.{name}")
                } else if def {
                    "defaults".to_string()
                } else {
                    BUILT_IN.to_string()
                };
                origins.insert(key, from);
            }
            // Bastions and privilege: the host's own, else its first group's that has one,
            // else [defaults]'s; with where it came from.
            let jump_spec = pick(
                &name,
                h.jump.as_ref(),
                &groups,
                &self.groups,
                |s| s.jump.as_ref(),
                d.jump.as_ref(),
            );
            let become_spec = pick(
                &name,
                h.become_.as_ref(),
                &groups,
                &self.groups,
                |s| s.become_.as_ref(),
                d.become_.as_ref(),
            );
            for (key, from) in [
                ("jump", jump_spec.as_ref().map(|(f, _)| f)),
                ("become", become_spec.as_ref().map(|(f, _)| f)),
            ] {
                origins.insert(key, from.cloned().unwrap_or_else(|| BUILT_IN.to_string()));
            }
            let become_password = match h.become_password.as_ref().or(d.become_password.as_ref()) {
                None => None,
                Some(r) => {
                    let s = r
                        .get_ref()
                        .resolve(base)
                        .map_err(|m| err(r.span(), format!("hosts.{name}.become_password: {m}")))?;
                    redactor.add(&s);
                    Some(s)
                }
            };
            let become_ = match become_spec {
                Some((from, b)) => match b.get_ref() {
                    BecomeKey::Off => None,
                    // [defaults] and groups mean the SSH hosts among them.
                    BecomeKey::As(_)
                        if transport == TransportKind::Local && from != format!("hosts.{name}") =>
                    {
                        None
                    }
                    BecomeKey::As(user) => {
                        if transport == TransportKind::Local {
                            return Err(err(
                                b.span(),
                                format!("{from}.become: for SSH hosts only; for a local host, run capstan itself with the privilege it needs"),
                            ));
                        }
                        Some(Become {
                            user: user.clone(),
                            password: become_password.clone(),
                        })
                    }
                },
                None => None,
            };
            let entry = HostEntry {
                address: h
                    .address
                    .clone()
                    .or(d.address.clone())
                    .unwrap_or_else(|| name.clone()),
                port: h.port.or(d.port).unwrap_or(22),
                user: h
                    .user
                    .clone()
                    .or(d.user.clone())
                    .unwrap_or_else(current_user),
                transport,
                auth,
                known_hosts: expand_path(known, base),
                host_key_policy: h
                    .host_key_policy
                    .or(d.host_key_policy)
                    .unwrap_or(HostKeyPolicy::Strict),
                connect_timeout: h
                    .connect_timeout
                    .or(d.connect_timeout)
                    .map_or(Duration::from_secs(10), |x| x.0),
                command_timeout: h
                    .command_timeout
                    .or(d.command_timeout)
                    .map_or(Duration::from_secs(600), |x| x.0),
                keepalive: h
                    .keepalive
                    .or(d.keepalive)
                    .map_or(Duration::from_secs(15), |x| x.0),
                jump: Vec::new(),
                become_,
                become_password,
                host_lock: h
                    .host_lock
                    .clone()
                    .or(d.host_lock.clone())
                    .map_or(Some(String::new()), |k| k.0),
                host_lock_lease: h
                    .host_lock_lease
                    .or(d.host_lock_lease)
                    .map_or(Duration::from_secs(300), |x| x.0),
                identity_files: Vec::new(),
                identities_only: false,
                origins,
                groups: groups.clone(),
                vars,
                name: name.clone(),
            };
            // Values that cannot work are refused here, naming the field (and whether it came
            // from [defaults]), before any host is touched.
            let field = |own: bool, key: &str| {
                if own {
                    format!("hosts.{name}.{key}")
                } else {
                    format!("defaults.{key} (for host {name})")
                }
            };
            if entry.keepalive.is_zero() {
                return Err(err(
                    span,
                    format!(
                        "{}: must be more than 0s",
                        field(h.keepalive.is_some(), "keepalive")
                    ),
                ));
            }
            if entry.address.trim().is_empty() {
                return Err(err(
                    span,
                    format!("{}: is empty", field(h.address.is_some(), "address")),
                ));
            }
            if entry.port == 0 && transport == TransportKind::Ssh {
                return Err(err(
                    span,
                    format!("{}: 0 is not a port", field(h.port.is_some(), "port")),
                ));
            }
            for (own, key, d) in [
                (
                    h.connect_timeout.is_some(),
                    "connect_timeout",
                    entry.connect_timeout,
                ),
                (
                    h.command_timeout.is_some(),
                    "command_timeout",
                    entry.command_timeout,
                ),
                (
                    h.host_lock_lease.is_some(),
                    "host_lock_lease",
                    entry.host_lock_lease,
                ),
            ] {
                if d.is_zero() {
                    return Err(err(
                        span,
                        format!("{}: must be more than 0s", field(own, key)),
                    ));
                }
            }
            let mut entry = entry;
            if let Some((from, j)) = jump_spec {
                let mut hops = Vec::new();
                for spec in &j.get_ref().0 {
                    let hop = ssh_config::parse_hop(spec, &entry, d.user.as_deref())
                        .map_err(|m| err(j.span(), format!("{from}.jump: {m}")))?;
                    hops.push(hop);
                }
                entry.jump = hops;
            }
            for g in &groups {
                group_members
                    .entry(g.clone())
                    .or_default()
                    .push(name.clone());
            }
            hosts.push(entry);
        }
        let mut secrets = BTreeMap::new();
        for (name, r) in &self.secrets {
            check_name("secret", name).map_err(|m| err(r.span(), m))?;
            let s = r
                .get_ref()
                .resolve(base)
                .map_err(|m| err(r.span(), format!("secrets.{name}: {m}")))?;
            redactor.add(&s);
            secrets.insert(name.clone(), s);
        }
        let index = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.name.clone(), i))
            .collect();
        Ok(Inventory {
            source: file.to_string(),
            hosts,
            groups: group_members,
            secrets,
            path: None,
            redactor,
            ssh_config: self.ssh_config.map_or(SshConfigSource::Default, |k| {
                match k.into_inner().0 {
                    SshConfigSource::File(p) => {
                        SshConfigSource::File(expand_path(&p.to_string_lossy(), base))
                    }
                    other => other,
                }
            }),
            default_user: self.defaults.user.clone(),
            index,
        })
    }
}

fn resolve_auth(
    a: &AuthSpec,
    base: &Path,
    redactor: &Redactor,
) -> std::result::Result<Auth, String> {
    let given = [a.key.is_some(), a.agent == Some(true), a.password.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if given != 1 {
        return Err("give exactly one of `key`, `agent = true` or `password`".into());
    }
    if a.passphrase.is_some() && a.key.is_none() {
        return Err("`passphrase` goes with `key`".into());
    }
    let secret = |r: &SecretRef| -> std::result::Result<Secret, String> {
        let s = r.resolve(base)?;
        redactor.add(&s);
        Ok(s)
    };
    if let Some(k) = &a.key {
        let passphrase = a.passphrase.as_ref().map(secret).transpose()?;
        return Ok(Auth::Key {
            path: expand_path(k, base),
            passphrase,
        });
    }
    if let Some(p) = &a.password {
        return Ok(Auth::Password(secret(p)?));
    }
    Ok(Auth::Agent)
}

/// A setting a host may have itself, through its first group that has it, or from
/// `[defaults]`, in that order: the value and where it came from (`hosts.NAME`, `groups.G`,
/// `defaults`).
fn pick<'a, T>(
    name: &str,
    own: Option<&'a T>,
    host_groups: &[String],
    groups: &'a BTreeMap<String, GroupSpec>,
    of_group: impl Fn(&'a GroupSpec) -> Option<&'a T>,
    defaults: Option<&'a T>,
) -> Option<(String, &'a T)> {
    own.map(|v| (format!("hosts.{name}"), v))
        .or_else(|| {
            host_groups.iter().find_map(|g| {
                groups
                    .get(g)
                    .and_then(&of_group)
                    .map(|v| (format!("groups.{g}"), v))
            })
        })
        .or(defaults.map(|v| ("defaults".to_string(), v)))
}

/// The origin of a setting nothing gave: capstan's own default.
pub(crate) const BUILT_IN: &str = "built-in";

/// Host and group names become script identifiers and step keys: keep them plain.
fn check_name(what: &str, n: &str) -> std::result::Result<(), String> {
    let ok = !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} name `{n}` may only hold letters, digits, `-`, `_` and `.`"
        ))
    }
}

pub(crate) fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Inventory> {
        Inventory::from_str_at(t, "inv.toml", Path::new("/base"))
    }

    #[test]
    fn paths_expand_the_home_and_follow_the_inventory() {
        let home = home().expect("a home directory");
        let base = Path::new("/base");
        assert_eq!(expand_path("~", base), home);
        assert_eq!(expand_path("~/.ssh/id", base), home.join(".ssh/id"));
        // `~user` is not ours to resolve: relative to the inventory, like any other name.
        assert_eq!(expand_path("~ops/k", base), base.join("~ops/k"));
        assert_eq!(expand_path("keys/k", base), base.join("keys/k"));
        assert_eq!(expand_path("/etc/k", base), PathBuf::from("/etc/k"));
    }

    #[test]
    fn merges_vars_and_groups() {
        let inv = parse(
            r#"
[defaults]
user = "ops"
vars = { root = "/opt/a", tier = "x" }

[groups.tablet]
hosts = ["t1"]
vars = { tier = "tablet" }

[hosts.t1]
address = "10.0.0.1"
port = 2222
vars = { id = 1 }

[hosts.n1]
transport = "local"
groups = ["nameserver"]
"#,
        )
        .unwrap();
        let t1 = inv.host("t1").unwrap();
        assert_eq!(t1.user, "ops");
        assert_eq!(t1.port, 2222);
        assert_eq!(t1.groups, vec!["tablet"]);
        assert_eq!(t1.vars["tier"], "tablet");
        assert_eq!(t1.vars["root"], "/opt/a");
        assert_eq!(inv.groups["nameserver"], vec!["n1"]);
        assert_eq!(inv.host("n1").unwrap().address, "n1");
    }

    #[test]
    fn unknown_field_names_field_and_line() {
        let e = parse("[hosts.a]\nadress = \"x\"\n").err().unwrap();
        assert!(
            e.to_string()
                .starts_with("inv.toml:2:1: hosts.a.adress: unknown field `adress`"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_positioned() {
        let e = parse("[hosts.a]\nport = 70000\n").err().unwrap();
        assert!(
            e.to_string().starts_with("inv.toml:2:8: hosts.a.port:"),
            "{e}"
        );
        for (text, want) in [
            ("[hosts.a]\naddress = \" \"\n", "hosts.a.address: is empty"),
            ("[hosts.a]\nport = 0\n", "hosts.a.port: 0 is not a port"),
            (
                "[defaults]\nconnect_timeout = \"0s\"\n[hosts.a]\n",
                "defaults.connect_timeout (for host a): must be more than 0s",
            ),
            (
                "[hosts.a]\ncommand_timeout = 0\n",
                "hosts.a.command_timeout: must be more than 0s",
            ),
        ] {
            let e = parse(text).err().unwrap().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        let e = parse("[hosts.a]\ntransport = \"telnet\"\n").err().unwrap();
        assert!(e.to_string().contains("unknown variant `telnet`"), "{e}");
        let e = parse("[hosts.a]\nconnect_timeout = \"soon\"\n")
            .err()
            .unwrap();
        assert!(e.to_string().contains("hosts.a.connect_timeout"), "{e}");
        let e = parse("[hosts.a]\n[groups.g]\nhosts = [\"b\"]\n")
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "inv.toml:3:10: groups.g.hosts: unknown host `b`"
        );
    }

    #[test]
    fn bastions_come_from_the_host_then_its_group_then_defaults() {
        let inv = parse(
            r#"
[defaults]
user = "ops"
jump = "gw.example:2200"
auth = { key = "/k" }

[groups.dc2]
hosts = ["b", "c"]
jump = ["root@b1", "b2.dc2"]

[hosts.a]
[hosts.b]
[hosts.c]
jump = "none"
auth = { password = { env = "HOME" } }
"#,
        )
        .unwrap();
        let a = inv.host("a").unwrap();
        assert_eq!(a.jump.len(), 1);
        assert_eq!(a.jump[0].key(), "ops@gw.example:2200");
        assert_eq!(a.origins["jump"], "defaults");
        assert!(
            matches!(a.jump[0].auth, Auth::Key { .. }),
            "a bastion takes the host's key"
        );
        let b = inv.host("b").unwrap();
        let keys: Vec<String> = b.jump.iter().map(Hop::key).collect();
        assert_eq!(keys, ["root@b1:22", "ops@b2.dc2:22"]);
        assert_eq!(b.origins["jump"], "groups.dc2");
        let c = inv.host("c").unwrap();
        assert!(c.jump.is_empty());
        assert_eq!(c.origins["jump"], "hosts.c");
        assert_eq!(c.origins["user"], "defaults");
        assert_eq!(c.origins["port"], BUILT_IN);
        for (text, want) in [
            (
                "[hosts.a]\njump = \"b1:x\"\n",
                "hosts.a.jump: `b1:x`: `x` is not a port",
            ),
            ("[hosts.a]\njump = \"b1,,b2\"\n", "an empty bastion"),
            ("[hosts.a]\njump = 3\n", "expected a bastion"),
            (
                "ssh_config = 1\n[hosts.a]\n",
                "expected the path of an ssh_config file",
            ),
        ] {
            let e = parse(text).err().unwrap().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn ssh_config_fills_what_the_inventory_left_and_resolves_aliases() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("extra"),
            "Host *.dc2\n  User fromfile\n  ConnectTimeout 7\n",
        )
        .unwrap();
        let cfg = dir.path().join("config");
        std::fs::write(
            &cfg,
            format!(
                "Include {}/extra\nHost db1\n  HostName 10.9.0.1\n  Port 2022\n  ProxyJump jump1\n  StrictHostKeyChecking accept-new\n  IdentitiesOnly yes\n  IdentityFile ~/.ssh/db_key\n  ServerAliveInterval 5\nHost jump1\n  HostName 10.9.9.9\n  User jumper\n  UserKnownHostsFile /kh/jump\nHost *\n  Port 2200\n  UnknownOption whatever\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let mut inv = parse(
            "[hosts.db1]\n[hosts.db2]\naddress = \"db2.dc2\"\nport = 22\nuser = \"mine\"\n[hosts.l]\ntransport = \"local\"\n",
        )
        .unwrap();
        inv.apply_ssh_config(Some(&SshConfigSource::File(cfg.clone())))
            .unwrap();
        let db1 = inv.host("db1").unwrap();
        assert_eq!((db1.address.as_str(), db1.port), ("10.9.0.1", 2022));
        assert_eq!(db1.host_key_policy, HostKeyPolicy::AcceptNew);
        assert!(db1.identities_only);
        assert!(db1.identity_files[0].ends_with(".ssh/db_key"));
        assert_eq!(db1.keepalive, Duration::from_secs(5));
        assert_eq!(db1.jump.len(), 1);
        assert_eq!(db1.jump[0].key(), "jumper@10.9.9.9:2200");
        assert_eq!(db1.jump[0].known_hosts, PathBuf::from("/kh/jump"));
        assert!(db1.origins["address"].starts_with("ssh_config "));
        // db2: the inventory's port and user win; the file's timeout fills the gap.
        let db2 = inv.host("db2").unwrap();
        assert_eq!((db2.port, db2.user.as_str()), (22, "mine"));
        assert_eq!(db2.connect_timeout, Duration::from_secs(7));
        assert!(db2.jump.is_empty());
        // None: nothing changes.
        let mut again = parse("[hosts.db1]\n").unwrap();
        again
            .apply_ssh_config(Some(&SshConfigSource::None))
            .unwrap();
        assert_eq!(again.host("db1").unwrap().address, "db1");
        let e = again
            .apply_ssh_config(Some(&SshConfigSource::File(dir.path().join("nope"))))
            .unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn auth_needs_one_method() {
        let e = parse("[hosts.a]\nauth = { agent = true, key = \"k\" }\n")
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("hosts.a.auth: give exactly one of"),
            "{e}"
        );
        std::env::remove_var("CAPSTAN_TEST_NOPE");
        let e = parse("[hosts.a]\nauth = { password = { env = \"CAPSTAN_TEST_NOPE\" } }\n")
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("environment variable CAPSTAN_TEST_NOPE is not set"),
            "{e}"
        );
    }
}
