//! `capstan inventory show`: every host as capstan will reach it, and where each setting came from.

use capstan::inventory::{Auth, Hop, HostEntry, HostKeyPolicy, TransportKind};
use capstan::Inventory;
use serde_json::{json, Value};

fn auth_text(a: &Auth, identity_files: &[std::path::PathBuf], identities_only: bool) -> String {
    match a {
        Auth::Key { path, passphrase } => format!(
            "key {}{}",
            path.display(),
            if passphrase.is_some() {
                " (with a passphrase)"
            } else {
                ""
            }
        ),
        Auth::Agent => "agent".into(),
        Auth::Password(_) => "password (from a secret)".into(),
        Auth::Default => {
            let keys = if identity_files.is_empty() {
                "~/.ssh/id_ed25519, id_ecdsa, id_rsa".to_string()
            } else {
                identity_files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if identities_only {
                format!("keys {keys} (IdentitiesOnly: not the agent's)")
            } else {
                format!("agent, then keys {keys}")
            }
        }
    }
}

fn become_text(h: &HostEntry) -> String {
    match &h.become_ {
        None => "no".into(),
        Some(b) if b.password.is_some() => {
            format!("sudo -u {} (the login's password from a secret)", b.user)
        }
        Some(b) => format!("sudo -u {}", b.user),
    }
}

fn policy(p: HostKeyPolicy) -> &'static str {
    match p {
        HostKeyPolicy::Strict => "strict",
        HostKeyPolicy::AcceptNew => "accept-new",
    }
}

fn endpoint(user: &str, address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("{user}@[{address}]:{port}")
    } else {
        format!("{user}@{address}:{port}")
    }
}

fn hop_text(h: &Hop) -> String {
    endpoint(&h.user, &h.address, h.port)
}

/// One line per setting: name, value, origin, aligned.
pub fn show_text(inv: &Inventory) -> String {
    let mut out = format!("inventory {}\n", inv.source);
    for h in &inv.hosts {
        out.push('\n');
        if h.transport == TransportKind::Local {
            out.push_str(&format!("{}  local (this machine)\n", h.name));
            continue;
        }
        out.push_str(&format!(
            "{}  ssh {}\n",
            h.name,
            endpoint(&h.user, &h.address, h.port)
        ));
        let origin = |k: &str| h.origins.get(k).cloned().unwrap_or_default();
        let jump = if h.jump.is_empty() {
            "direct".to_string()
        } else {
            h.jump.iter().map(hop_text).collect::<Vec<_>>().join(" -> ")
        };
        let rows = [
            ("address", h.address.clone(), origin("address")),
            ("port", h.port.to_string(), origin("port")),
            ("user", h.user.clone(), origin("user")),
            ("jump", jump, origin("jump")),
            ("become", become_text(h), origin("become")),
            (
                "auth",
                auth_text(&h.auth, &h.identity_files, h.identities_only),
                origin("auth"),
            ),
            (
                "known_hosts",
                h.known_hosts.display().to_string(),
                origin("known_hosts"),
            ),
            (
                "host_key_policy",
                policy(h.host_key_policy).to_string(),
                origin("host_key_policy"),
            ),
            (
                "connect_timeout",
                humantime::format_duration(h.connect_timeout).to_string(),
                origin("connect_timeout"),
            ),
            (
                "keepalive",
                humantime::format_duration(h.keepalive).to_string(),
                origin("keepalive"),
            ),
            (
                "host_lock",
                match (&h.host_lock, h.transport) {
                    (_, TransportKind::Local) => "none (a local host)".to_string(),
                    (None, _) => "off".to_string(),
                    (Some(d), _) if d.is_empty() => format!(
                        "the host's $CAPSTAN_HOST_LOCK, else {}",
                        capstan::hostlock::DEFAULT_DIR
                    ),
                    (Some(d), _) => d.clone(),
                },
                origin("host_lock"),
            ),
            (
                "host_lock_lease",
                humantime::format_duration(h.host_lock_lease).to_string(),
                origin("host_lock_lease"),
            ),
        ];
        let width = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
        for (k, v, o) in rows {
            out.push_str(&format!("  {k:<16} {v:<width$}  ({o})\n"));
        }
        for (i, hop) in h.jump.iter().enumerate() {
            out.push_str(&format!(
                "  bastion {}        {} as written `{}`; auth {}; known_hosts {} ({})\n",
                i + 1,
                hop_text(hop),
                hop.spec,
                auth_text(&hop.auth, &hop.identity_files, hop.identities_only),
                hop.known_hosts.display(),
                policy(hop.host_key_policy)
            ));
        }
        if !h.groups.is_empty() {
            out.push_str(&format!("  groups           {}\n", h.groups.join(", ")));
        }
    }
    out
}

fn hop_json(h: &Hop) -> Value {
    json!({
        "spec": h.spec,
        "address": h.address,
        "port": h.port,
        "user": h.user,
        "auth": auth_text(&h.auth, &h.identity_files, h.identities_only),
        "known_hosts": h.known_hosts,
        "host_key_policy": policy(h.host_key_policy),
    })
}

fn host_json(h: &HostEntry) -> Value {
    json!({
        "name": h.name,
        "transport": h.transport,
        "address": h.address,
        "port": h.port,
        "user": h.user,
        "jump": h.jump.iter().map(hop_json).collect::<Vec<_>>(),
        "become": h.become_.as_ref().map(|b| json!({
            "user": b.user,
            "password": b.password.is_some(),
        })),
        "auth": auth_text(&h.auth, &h.identity_files, h.identities_only),
        "known_hosts": h.known_hosts,
        "host_key_policy": policy(h.host_key_policy),
        "connect_timeout_s": h.connect_timeout.as_secs_f64(),
        "keepalive_s": h.keepalive.as_secs_f64(),
        // null: off; "": the host's CAPSTAN_HOST_LOCK, else hostlock::DEFAULT_DIR.
        "host_lock": h.host_lock,
        "host_lock_lease_s": h.host_lock_lease.as_secs_f64(),
        "groups": h.groups,
        "origins": h.origins,
    })
}

/// The same as one JSON object: `{"inventory": FILE, "hosts": [...]}`.
pub fn show_json(inv: &Inventory) -> String {
    json!({
        "inventory": inv.source,
        "hosts": inv.hosts.iter().map(host_json).collect::<Vec<_>>(),
    })
    .to_string()
}
