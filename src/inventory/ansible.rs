//! Ansible inventories (INI and YAML) read as capstan's: hosts, groups and children, ranges, connection variables mapped, other vars kept, what cannot be mapped named.
//!
//! The reading follows Ansible's own rules: a group's hosts include its children's; a host's
//! variables are `all`'s, then each of its groups' from the shallowest to the deepest (by name
//! within a depth), then its own; in INI, a value on a host's line is a literal (number,
//! boolean, quoted string) and a value in a `[group:vars]` section is a string. The result is
//! capstan TOML: each host with its resolved connection settings and vars, each group with its
//! members (vars are resolved per host, so none is lost to a different merge order).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::error::{Error, Located, Result};

/// Which of Ansible's formats a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnsibleFormat {
    Ini,
    Yaml,
}

/// An Ansible inventory as capstan TOML, with what could not be mapped.
#[derive(Debug, Clone)]
pub struct Converted {
    pub toml: String,
    /// One line per Ansible variable capstan does not use or cannot take, with the hosts it is
    /// set for: `ansible_python_interpreter (db1, db2): an Ansible setting capstan does not use`.
    pub unmapped: Vec<String>,
}

type Vars = BTreeMap<String, Value>;

#[derive(Debug, Default)]
struct Group {
    hosts: Vec<String>,
    children: Vec<String>,
    vars: Vars,
}

/// Hosts in the order first seen, their own vars, and the groups.
#[derive(Debug, Default)]
struct Model {
    hosts: Vec<String>,
    host_vars: BTreeMap<String, Vars>,
    groups: BTreeMap<String, Group>,
}

impl Model {
    fn add_host(&mut self, group: &str, name: &str, vars: Vars) {
        if !self.host_vars.contains_key(name) {
            self.hosts.push(name.to_string());
        }
        self.host_vars
            .entry(name.to_string())
            .or_default()
            .extend(vars);
        let g = self.groups.entry(group.to_string()).or_default();
        if !g.hosts.iter().any(|h| h == name) {
            g.hosts.push(name.to_string());
        }
    }
}

fn err_at(file: &str, line: usize, msg: impl std::fmt::Display) -> Error {
    Error::Config(Located::new(format!("{file}:{line}: {msg}"), None))
}

/// Expands Ansible's host ranges: `db[01:03]`, `web[a:c]`, `n[0:10:5]`, several per name.
pub(crate) fn expand_range(pattern: &str) -> std::result::Result<Vec<String>, String> {
    let Some(open) = pattern.find('[') else {
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find(']')
        .map(|i| open + i)
        .ok_or_else(|| format!("`{pattern}`: `[` without `]`"))?;
    let (head, spec, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let parts: Vec<&str> = spec.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(format!(
            "`{pattern}`: a range is [START:END] or [START:END:STEP]"
        ));
    }
    let step: usize = match parts.get(2) {
        Some(s) => s
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`{pattern}`: `{s}` is not a step"))?,
        None => 1,
    };
    let (a, b) = (parts[0], parts[1]);
    let mut names = Vec::new();
    if let (Ok(x), Ok(y)) = (a.parse::<u64>(), b.parse::<u64>()) {
        if x > y {
            return Err(format!("`{pattern}`: the range goes backwards"));
        }
        // A leading zero fixes the width, as Ansible pads it.
        let width = if a.len() > 1 && a.starts_with('0') {
            a.len()
        } else {
            0
        };
        for n in (x..=y).step_by(step) {
            names.push(format!("{head}{n:0width$}"));
        }
    } else if a.len() == 1 && b.len() == 1 && a < b {
        let (x, y) = (a.as_bytes()[0], b.as_bytes()[0]);
        if !(x.is_ascii_alphabetic() && y.is_ascii_alphabetic()) {
            return Err(format!("`{pattern}`: not a range of numbers or letters"));
        }
        for c in (x..=y).step_by(step) {
            names.push(format!("{head}{}", c as char));
        }
    } else {
        return Err(format!("`{pattern}`: not a range of numbers or letters"));
    }
    let mut out = Vec::new();
    for n in names {
        for rest in expand_range(tail)? {
            out.push(format!("{n}{rest}"));
        }
    }
    Ok(out)
}

/// A value on an INI host line, read as Ansible reads it (a Python literal where it is one).
fn ini_literal(v: &str) -> Value {
    let unquoted = |q: char| v.len() >= 2 && v.starts_with(q) && v.ends_with(q);
    if unquoted('"') || unquoted('\'') {
        return Value::String(v[1..v.len() - 1].to_string());
    }
    match v {
        "True" | "true" => return Value::Bool(true),
        "False" | "false" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = v.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = v.parse::<f64>() {
        if f.is_finite() && v.contains('.') {
            return serde_json::Number::from_f64(f).map_or(Value::String(v.into()), Value::Number);
        }
    }
    Value::String(v.to_string())
}

/// `key=value` pairs of an INI line, values quoted with ' or " kept whole (shell-like split).
fn ini_pairs(file: &str, n: usize, words: &[String], literal: bool) -> Result<Vars> {
    let mut vars = Vars::new();
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| err_at(file, n, format!("`{w}`: expected key=value")))?;
        let value = if literal {
            ini_literal(v)
        } else {
            Value::String(v.to_string())
        };
        vars.insert(k.to_string(), value);
    }
    Ok(vars)
}

fn parse_ini(text: &str, file: &str) -> Result<Model> {
    let mut m = Model::default();
    // (group, kind): kind "" for hosts, "vars", "children".
    let mut section = ("ungrouped".to_string(), String::new());
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            let inner = line
                .strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
                .ok_or_else(|| err_at(file, n, format!("`{line}`: a section is [name]")))?;
            let (g, kind) = match inner.split_once(':') {
                Some((g, k)) if k == "vars" || k == "children" => (g, k),
                Some((_, k)) => {
                    return Err(err_at(
                        file,
                        n,
                        format!("`[{inner}]`: unknown section kind `{k}` (vars or children)"),
                    ))
                }
                None => (inner, ""),
            };
            m.groups.entry(g.to_string()).or_default();
            section = (g.to_string(), kind.to_string());
            continue;
        }
        let words = shlex::split(line)
            .ok_or_else(|| err_at(file, n, format!("`{line}`: unbalanced quotes")))?;
        let (first, rest) = words.split_first().expect("a non-empty line has a word");
        match section.1.as_str() {
            "vars" => {
                let vars = ini_pairs(file, n, &words, false)?;
                m.groups
                    .entry(section.0.clone())
                    .or_default()
                    .vars
                    .extend(vars);
            }
            "children" => {
                if !rest.is_empty() {
                    return Err(err_at(
                        file,
                        n,
                        "a children section lists one group per line",
                    ));
                }
                m.groups.entry(first.clone()).or_default();
                let g = m.groups.entry(section.0.clone()).or_default();
                if !g.children.contains(first) {
                    g.children.push(first.clone());
                }
            }
            _ => {
                let vars = ini_pairs(file, n, rest, true)?;
                for h in expand_range(first).map_err(|e| err_at(file, n, e))? {
                    m.add_host(&section.0, &h, vars.clone());
                }
            }
        }
    }
    Ok(m)
}

fn yaml_to_json(y: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::String(s.clone()), Value::Number),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(yaml_to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| (yaml_key(k), yaml_to_json(v)))
                .collect(),
        ),
        Yaml::Null | Yaml::BadValue | Yaml::Alias(_) => Value::Null,
    }
}

fn yaml_key(k: &yaml_rust2::Yaml) -> String {
    use yaml_rust2::Yaml;
    match k {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        _ => String::new(),
    }
}

fn yaml_group(
    m: &mut Model,
    file: &str,
    name: &str,
    node: &yaml_rust2::Yaml,
    seen: &mut BTreeSet<String>,
) -> Result<()> {
    use yaml_rust2::Yaml;
    m.groups.entry(name.to_string()).or_default();
    let Yaml::Hash(h) = node else {
        if matches!(node, Yaml::Null) {
            return Ok(());
        }
        return Err(err_at(
            file,
            0,
            format!("group `{name}`: expected a mapping of hosts, vars and children"),
        ));
    };
    for (k, v) in h {
        match yaml_key(k).as_str() {
            "hosts" => {
                let Yaml::Hash(hosts) = v else {
                    if matches!(v, Yaml::Null) {
                        continue;
                    }
                    return Err(err_at(
                        file,
                        0,
                        format!("group `{name}`: hosts is a mapping (host: vars)"),
                    ));
                };
                for (hk, hv) in hosts {
                    let vars: Vars = match yaml_to_json(hv) {
                        Value::Object(o) => o.into_iter().collect(),
                        Value::Null => Vars::new(),
                        _ => {
                            return Err(err_at(
                                file,
                                0,
                                format!(
                                    "host `{}` in `{name}`: its vars are a mapping",
                                    yaml_key(hk)
                                ),
                            ))
                        }
                    };
                    for host in expand_range(&yaml_key(hk)).map_err(|e| err_at(file, 0, e))? {
                        m.add_host(name, &host, vars.clone());
                    }
                }
            }
            "vars" => match yaml_to_json(v) {
                Value::Object(o) => m.groups.entry(name.to_string()).or_default().vars.extend(o),
                Value::Null => {}
                _ => {
                    return Err(err_at(
                        file,
                        0,
                        format!("group `{name}`: vars is a mapping"),
                    ))
                }
            },
            "children" => {
                let Yaml::Hash(children) = v else {
                    if matches!(v, Yaml::Null) {
                        continue;
                    }
                    return Err(err_at(
                        file,
                        0,
                        format!("group `{name}`: children is a mapping"),
                    ));
                };
                for (ck, cv) in children {
                    let child = yaml_key(ck);
                    let g = m.groups.entry(name.to_string()).or_default();
                    if !g.children.contains(&child) {
                        g.children.push(child.clone());
                    }
                    if seen.insert(child.clone()) {
                        yaml_group(m, file, &child, cv, seen)?;
                    } else if !matches!(cv, Yaml::Null) {
                        // The same group described twice: Ansible merges; so do we.
                        yaml_group(m, file, &child, cv, seen)?;
                    }
                }
            }
            other => {
                return Err(err_at(
                    file,
                    0,
                    format!("group `{name}`: unknown key `{other}` (hosts, vars or children)"),
                ))
            }
        }
    }
    Ok(())
}

fn parse_yaml(text: &str, file: &str) -> Result<Model> {
    use yaml_rust2::Yaml;
    let docs = yaml_rust2::YamlLoader::load_from_str(text).map_err(|e| {
        Error::Config(Located::new(
            format!(
                "{file}:{}:{}: {}",
                e.marker().line(),
                e.marker().col() + 1,
                e.info()
            ),
            None,
        ))
    })?;
    let mut m = Model::default();
    let Some(Yaml::Hash(top)) = docs.first() else {
        return Err(err_at(file, 1, "expected a mapping of groups (all: ...)"));
    };
    let mut seen = BTreeSet::new();
    for (k, v) in top {
        let name = yaml_key(k);
        seen.insert(name.clone());
        yaml_group(&mut m, file, &name, v, &mut seen)?;
    }
    Ok(m)
}

/// Every host's groups (direct and through children), and each group's depth below `all`.
fn memberships(m: &Model) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, usize>) {
    let mut depth: BTreeMap<String, usize> = BTreeMap::new();
    // Depth: the longest path from a top group (Ansible: `all` is 0, its children 1, ...).
    let mut changed = true;
    for g in m.groups.keys() {
        depth.insert(g.clone(), usize::from(g != "all"));
    }
    let mut rounds = 0;
    while changed && rounds <= m.groups.len() {
        changed = false;
        rounds += 1;
        for (g, spec) in &m.groups {
            let d = depth[g];
            for c in &spec.children {
                if depth.get(c).copied().unwrap_or(0) < d + 1 {
                    depth.insert(c.clone(), d + 1);
                    changed = true;
                }
            }
        }
    }
    // Hosts of each group, children's included.
    let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    fn collect(m: &Model, g: &str, out: &mut BTreeSet<String>, stack: &mut Vec<String>) {
        if stack.iter().any(|s| s == g) {
            return;
        }
        stack.push(g.to_string());
        if let Some(spec) = m.groups.get(g) {
            out.extend(spec.hosts.iter().cloned());
            for c in &spec.children {
                collect(m, c, out, stack);
            }
        }
        stack.pop();
    }
    for g in m.groups.keys() {
        let mut set = BTreeSet::new();
        collect(m, g, &mut set, &mut Vec::new());
        members.insert(g.clone(), set);
    }
    // Every host is in `all`, listed there or not.
    members.insert("all".into(), m.hosts.iter().cloned().collect());
    depth.insert("all".into(), 0);
    let mut host_groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for h in &m.hosts {
        let mut gs: Vec<String> = members
            .iter()
            .filter(|(_, hs)| hs.contains(h))
            .map(|(g, _)| g.clone())
            .collect();
        gs.sort_by_key(|g| (depth.get(g).copied().unwrap_or(1), g.clone()));
        host_groups.insert(h.clone(), gs);
    }
    (host_groups, depth)
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Some(true),
            "false" | "no" | "0" | "off" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_i64().map(|i| i != 0),
        _ => None,
    }
}

/// What capstan takes from `ansible_ssh_common_args`: `-J HOP` or `-o ProxyJump=HOP`,
/// `-o UserKnownHostsFile=F`, `-o StrictHostKeyChecking=V`, as (key, value) pairs of the TOML;
/// the rest is unmapped.
fn from_ssh_args(args: &str) -> (Vec<(&'static str, String)>, Vec<String>) {
    let words = shlex::split(args).unwrap_or_default();
    let mut found = Vec::new();
    let mut rest = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        if w == "-J" {
            if let Some(j) = it.next() {
                found.push(("jump", j));
            }
        } else if let Some(j) = w.strip_prefix("-J") {
            found.push(("jump", j.to_string()));
        } else if w == "-o" {
            let Some(o) = it.next() else {
                rest.push(w);
                continue;
            };
            let (k, v) = o.split_once('=').unwrap_or((o.as_str(), ""));
            match k.to_ascii_lowercase().as_str() {
                "proxyjump" => found.push(("jump", v.to_string())),
                "userknownhostsfile" => found.push(("known_hosts", v.to_string())),
                "stricthostkeychecking" => match v.to_ascii_lowercase().as_str() {
                    "yes" | "ask" => found.push(("host_key_policy", "strict".into())),
                    "accept-new" | "no" | "off" => {
                        found.push(("host_key_policy", "accept-new".into()))
                    }
                    _ => rest.push(format!("-o {o}")),
                },
                _ => rest.push(format!("-o {o}")),
            }
        } else {
            rest.push(w);
        }
    }
    (found, rest)
}

/// Reads an Ansible inventory as capstan TOML.
pub fn convert(text: &str, file: &str, format: AnsibleFormat) -> Result<Converted> {
    let m = match format {
        AnsibleFormat::Ini => parse_ini(text, file)?,
        AnsibleFormat::Yaml => parse_yaml(text, file)?,
    };
    if m.hosts.is_empty() {
        return Err(err_at(file, 1, "the inventory lists no hosts"));
    }
    let (host_groups, _) = memberships(&m);
    // key -> (why, hosts)
    let mut unmapped: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let mut note = |key: &str, why: &str, host: &str| {
        let e = unmapped
            .entry(key.to_string())
            .or_insert_with(|| (why.to_string(), Vec::new()));
        e.1.push(host.to_string());
    };
    let mut hosts = toml::Table::new();
    for h in &m.hosts {
        // Ansible's precedence: groups shallow to deep (by name within a depth), then the host.
        let mut eff = Vars::new();
        for g in &host_groups[h] {
            if let Some(spec) = m.groups.get(g) {
                eff.extend(spec.vars.clone());
            }
        }
        eff.extend(m.host_vars[h].clone());
        let mut t = toml::Table::new();
        let mut vars = toml::Table::new();
        let mut become_on = false;
        let mut become_user: Option<String> = None;
        for (k, v) in &eff {
            match k.as_str() {
                "ansible_host" | "ansible_ssh_host" => {
                    t.insert("address".into(), as_text(v).into());
                }
                "ansible_port" | "ansible_ssh_port" => match as_text(v).parse::<u16>() {
                    Ok(p) if p > 0 => {
                        t.insert("port".into(), i64::from(p).into());
                    }
                    _ => {
                        return Err(err_at(
                            file,
                            0,
                            format!("host {h}: {k} `{}` is not a port", as_text(v)),
                        ))
                    }
                },
                "ansible_user" | "ansible_ssh_user" => {
                    t.insert("user".into(), as_text(v).into());
                }
                "ansible_connection" => match as_text(v).as_str() {
                    "ssh" | "smart" | "paramiko" => {
                        t.insert("transport".into(), "ssh".into());
                    }
                    "local" => {
                        t.insert("transport".into(), "local".into());
                    }
                    other => note(
                        k,
                        &format!("connection `{other}` is not one capstan has (ssh, local)"),
                        h,
                    ),
                },
                "ansible_ssh_private_key_file" | "ansible_private_key_file" => {
                    let mut a = toml::Table::new();
                    a.insert("key".into(), as_text(v).into());
                    t.insert("auth".into(), a.into());
                }
                "ansible_become" => match as_bool(v) {
                    Some(b) => become_on = b,
                    None => note(k, "not a boolean", h),
                },
                "ansible_become_user" => become_user = Some(as_text(v)),
                "ansible_become_method" => {
                    if as_text(v) != "sudo" {
                        note(k, "capstan becomes through sudo only", h);
                    }
                }
                "ansible_ssh_common_args" | "ansible_ssh_extra_args" => {
                    let (found, rest) = from_ssh_args(&as_text(v));
                    for (key, value) in found {
                        t.insert(key.into(), value.into());
                    }
                    if !rest.is_empty() {
                        note(
                            k,
                            &format!("ssh options capstan does not pass on: {}", rest.join(" ")),
                            h,
                        );
                    }
                }
                "ansible_password" | "ansible_ssh_pass" | "ansible_become_password"
                | "ansible_become_pass" | "ansible_sudo_pass" => note(
                    k,
                    "an inline password: capstan takes secrets only by reference (auth = { password = { env = .. } }, become_password = { env = .. })",
                    h,
                ),
                _ if k.starts_with("ansible_") => {
                    note(k, "an Ansible setting capstan does not use", h)
                }
                _ => {
                    vars.insert(k.clone(), json_to_toml(v));
                }
            }
        }
        if become_on {
            t.insert(
                "become".into(),
                become_user.unwrap_or_else(|| "root".into()).into(),
            );
        } else if become_user.is_some() {
            note("ansible_become_user", "set without ansible_become", h);
        }
        if !vars.is_empty() {
            t.insert("vars".into(), vars.into());
        }
        hosts.insert(h.clone(), t.into());
    }
    let mut groups = toml::Table::new();
    for (g, spec) in &m.groups {
        if g == "all" || g == "ungrouped" {
            continue;
        }
        let mut members: Vec<String> = Vec::new();
        for h in &m.hosts {
            if host_groups[h].contains(g) {
                members.push(h.clone());
            }
        }
        let _ = spec;
        let mut t = toml::Table::new();
        t.insert(
            "hosts".into(),
            toml::Value::Array(members.into_iter().map(toml::Value::String).collect()),
        );
        groups.insert(g.clone(), t.into());
    }
    let mut doc = toml::Table::new();
    if !groups.is_empty() {
        doc.insert("groups".into(), groups.into());
    }
    doc.insert("hosts".into(), hosts.into());
    let body =
        toml::to_string(&doc).map_err(|e| err_at(file, 0, format!("cannot write TOML: {e}")))?;
    let unmapped: Vec<String> = unmapped
        .into_iter()
        .map(|(k, (why, hs))| format!("{k} ({}): {why}", hs.join(", ")))
        .collect();
    let mut toml_text = format!(
        "# Converted by `capstan inventory convert` from {file} (Ansible {}).\n# Vars are resolved per host with Ansible's precedence (all, groups shallow to deep, host).\n",
        match format {
            AnsibleFormat::Ini => "INI",
            AnsibleFormat::Yaml => "YAML",
        }
    );
    if !unmapped.is_empty() {
        toml_text.push_str("# Not mapped:\n");
        for u in &unmapped {
            toml_text.push_str(&format!("#   {u}\n"));
        }
    }
    toml_text.push('\n');
    toml_text.push_str(&body);
    Ok(Converted {
        toml: toml_text,
        unmapped,
    })
}

fn json_to_toml(v: &Value) -> toml::Value {
    match v {
        Value::Null => toml::Value::String(String::new()),
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => n
            .as_i64()
            .map(toml::Value::Integer)
            .or_else(|| n.as_f64().map(toml::Value::Float))
            .unwrap_or_else(|| toml::Value::String(n.to_string())),
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(a) => toml::Value::Array(a.iter().map(json_to_toml).collect()),
        Value::Object(o) => toml::Value::Table(
            o.iter()
                .map(|(k, v)| (k.clone(), json_to_toml(v)))
                .collect(),
        ),
    }
}

/// Which Ansible format a path names by its extension: `.ini`, `.yml`/`.yaml`; else none.
pub fn format_of(path: &std::path::Path) -> Option<AnsibleFormat> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("ini") => Some(AnsibleFormat::Ini),
        Some("yml" | "yaml") => Some(AnsibleFormat::Yaml),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_expand_as_ansible_does() {
        assert_eq!(expand_range("db[01:03]").unwrap(), ["db01", "db02", "db03"]);
        assert_eq!(
            expand_range("web[a:c].x").unwrap(),
            ["weba.x", "webb.x", "webc.x"]
        );
        assert_eq!(expand_range("n[0:10:5]").unwrap(), ["n0", "n5", "n10"]);
        assert_eq!(
            expand_range("r[1:2]-[a:b]").unwrap(),
            ["r1-a", "r1-b", "r2-a", "r2-b"]
        );
        for bad in ["x[1:", "x[3:1]", "x[1]", "x[1:2:0]", "x[a:9]"] {
            assert!(expand_range(bad).is_err(), "{bad}");
        }
    }

    const INI: &str = r#"
# comment
lone ansible_host=10.0.0.9

[oms]
oms1 ansible_host=10.0.0.1 ansible_port=2222 region="hz 1" weight=3
oms[2:3] ansible_host=10.0.0.2

[oms:vars]
ansible_user=admin
ansible_become=true
ansible_python_interpreter=/usr/bin/python3
tier=oms

[db]
db[01:02] ansible_ssh_common_args='-o ProxyJump=ops@gw:2200 -o ForwardAgent=yes'

[dc1:children]
oms
db

[dc1:vars]
tier=dc
site=hz

[all:vars]
ansible_become_password=hunter2
site=all
"#;

    #[test]
    fn ini_groups_children_ranges_and_precedence() {
        let c = convert(INI, "hosts.ini", AnsibleFormat::Ini).unwrap();
        let inv =
            crate::inventory::Inventory::from_str_at(&c.toml, "x.toml", std::path::Path::new("/"))
                .unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
        let names = inv.host_names();
        assert_eq!(names.len(), 6, "{names:?}");
        let oms1 = inv.host("oms1").unwrap();
        assert_eq!(
            (oms1.address.as_str(), oms1.port, oms1.user.as_str()),
            ("10.0.0.1", 2222, "admin")
        );
        assert_eq!(oms1.become_.as_ref().unwrap().user, "root");
        assert_eq!(oms1.vars["region"], "hz 1");
        assert_eq!(oms1.vars["weight"], 3);
        // oms (depth 2) wins over dc1 (depth 1), which wins over all.
        assert_eq!(oms1.vars["tier"], "oms");
        assert_eq!(oms1.vars["site"], "hz");
        assert_eq!(inv.host("oms3").unwrap().address, "10.0.0.2");
        let db2 = inv.host("db02").unwrap();
        assert_eq!(db2.jump[0].key(), "ops@gw:2200");
        assert_eq!(db2.vars["tier"], "dc");
        assert_eq!(inv.host("lone").unwrap().vars["site"], "all");
        assert_eq!(inv.groups["dc1"].len(), 5);
        assert!(
            !c.toml.contains("hunter2"),
            "an inline password is never copied"
        );
        let unmapped = c.unmapped.join("\n");
        for want in [
            "ansible_become_password (lone, oms1, oms2, oms3, db01, db02): an inline password",
            "ansible_python_interpreter (oms1, oms2, oms3): an Ansible setting capstan does not use",
            "ansible_ssh_common_args (db01, db02): ssh options capstan does not pass on: -o ForwardAgent=yes",
        ] {
            assert!(unmapped.contains(want), "{want}\n{unmapped}");
        }
    }

    #[test]
    fn yaml_reads_the_same_inventory() {
        let yaml = r#"
all:
  vars:
    site: all
  hosts:
    lone:
      ansible_host: 10.0.0.9
  children:
    dc1:
      vars: { tier: dc, site: hz }
      children:
        oms:
          vars:
            ansible_user: admin
            ansible_become: true
            ansible_become_user: oms
            tier: oms
          hosts:
            oms1: { ansible_host: 10.0.0.1, ansible_port: 2222, region: "hz 1", weight: 3 }
            oms[2:3]:
              ansible_host: 10.0.0.2
        db:
          hosts:
            db[01:02]:
"#;
        let c = convert(yaml, "hosts.yml", AnsibleFormat::Yaml).unwrap();
        let inv =
            crate::inventory::Inventory::from_str_at(&c.toml, "x.toml", std::path::Path::new("/"))
                .unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
        assert_eq!(inv.hosts.len(), 6);
        let oms1 = inv.host("oms1").unwrap();
        assert_eq!((oms1.port, oms1.user.as_str()), (2222, "admin"));
        assert_eq!(oms1.become_.as_ref().unwrap().user, "oms");
        assert_eq!(oms1.vars["tier"], "oms");
        assert_eq!(oms1.vars["site"], "hz");
        assert_eq!(oms1.vars["weight"], 3);
        assert_eq!(inv.groups["dc1"].len(), 5);
        assert!(c.unmapped.is_empty(), "{:?}", c.unmapped);
        let e = convert("all:\n  hosts: [a]\n", "h.yml", AnsibleFormat::Yaml).unwrap_err();
        assert!(e.to_string().contains("hosts is a mapping"), "{e}");
        let e = convert("all:\n  hosts:\n   a: [\n", "h.yml", AnsibleFormat::Yaml).unwrap_err();
        assert!(e.to_string().starts_with("h.yml:"), "{e}");
    }

    #[test]
    fn ini_errors_name_file_and_line() {
        for (text, want) in [
            ("[oms\n", "hosts.ini:1: `[oms`"),
            (
                "[a:kids]\n",
                "hosts.ini:1: `[a:kids]`: unknown section kind",
            ),
            ("[a]\nh x\n", "hosts.ini:2: `x`: expected key=value"),
            ("[a]\nh[1:\n", "hosts.ini:2: `h[1:`"),
            ("[a]\nh 'x\n", "hosts.ini:2:"),
        ] {
            let e = convert(text, "hosts.ini", AnsibleFormat::Ini)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
