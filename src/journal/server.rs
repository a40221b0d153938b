//! Where a journal is: a file path, or `mysql://USER@HOST:PORT/DB` with its password and TLS.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::secret::SecretRef;

/// A journal's place, as `--journal` and `CAPSTAN_JOURNAL` give it.
#[derive(Debug, Clone)]
pub enum JournalAt {
    File(PathBuf),
    Server(ServerSpec),
}

/// A journal on a MySQL-protocol server (MariaDB, MySQL, OceanBase's MySQL mode).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpec {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub db: String,
    /// Where the password comes from: `password_env=NAME`, `password_file=PATH`, else the
    /// environment variable `CAPSTAN_JOURNAL_PASSWORD` when set, else none.
    pub password: Option<SecretRef>,
    pub tls: bool,
    /// The CA certificate (PEM) the server's certificate must chain to; the system's roots when
    /// absent.
    pub tls_ca: Option<String>,
}

/// The variable a server journal's password is read from unless the address names another.
pub const PASSWORD_ENV: &str = "CAPSTAN_JOURNAL_PASSWORD";

impl std::fmt::Display for ServerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mysql://{}@{}:{}/{}",
            self.user, self.host, self.port, self.db
        )
    }
}

impl JournalAt {
    /// Reads `--journal`'s value: an address that starts with `mysql://` is a server, anything
    /// else a file path.
    pub fn parse(s: &std::ffi::OsStr) -> Result<JournalAt> {
        match s.to_str() {
            Some(t) if t.starts_with("mysql://") => Ok(JournalAt::Server(ServerSpec::parse(t)?)),
            Some(t) if t.contains("://") => Err(Error::Usage(format!(
                "--journal {t}: a journal is a file path or mysql://USER@HOST:PORT/DB"
            ))),
            _ => Ok(JournalAt::File(PathBuf::from(s))),
        }
    }

    /// `--journal` if given, else `CAPSTAN_JOURNAL`, else the default file.
    pub fn from_option(given: Option<&std::ffi::OsStr>) -> Result<JournalAt> {
        match given {
            Some(s) => JournalAt::parse(s),
            None => match std::env::var_os("CAPSTAN_JOURNAL") {
                Some(s) if !s.is_empty() => JournalAt::parse(&s),
                _ => Ok(JournalAt::File(super::Journal::default_path())),
            },
        }
    }
}

impl ServerSpec {
    /// Parses `mysql://USER@HOST[:PORT]/DB[?tls=true&tls_ca=PATH&password_env=NAME&password_file=PATH]`.
    /// A password in the address is refused: it would sit in shell history and process lists.
    pub fn parse(url: &str) -> Result<ServerSpec> {
        let bad = |why: &str| Error::Usage(format!("--journal {url}: {why}"));
        let rest = url
            .strip_prefix("mysql://")
            .ok_or_else(|| bad("expected mysql://USER@HOST:PORT/DB"))?;
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (auth, hostpart) = main
            .rsplit_once('@')
            .ok_or_else(|| bad("the user is missing (mysql://USER@HOST:PORT/DB)"))?;
        if auth.contains(':') {
            return Err(bad(
                "a password does not go in the address (it would be in shell history and `ps`); \
                 give it in CAPSTAN_JOURNAL_PASSWORD, or name it with ?password_env=NAME or \
                 ?password_file=PATH",
            ));
        }
        if auth.is_empty() {
            return Err(bad("the user is empty"));
        }
        let (hostport, db) = hostpart
            .split_once('/')
            .ok_or_else(|| bad("the database is missing (mysql://USER@HOST:PORT/DB)"))?;
        if db.is_empty() || db.contains('/') {
            return Err(bad("the database name is missing or has a `/`"));
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| bad(&format!("port `{p}` is not a number from 1 to 65535")))?,
            ),
            _ => (hostport, 3306),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        let mut spec = ServerSpec {
            user: auth.to_string(),
            host: host.to_string(),
            port,
            db: db.to_string(),
            password: None,
            tls: false,
            tls_ca: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "tls" => {
                    spec.tls = match v {
                        "true" | "1" | "" => true,
                        "false" | "0" => false,
                        _ => return Err(bad(&format!("tls={v}: expected true or false"))),
                    }
                }
                "tls_ca" => {
                    spec.tls = true;
                    spec.tls_ca = Some(v.to_string());
                }
                "password_env" => spec.password = Some(SecretRef::Env(v.to_string())),
                "password_file" => spec.password = Some(SecretRef::File(v.to_string())),
                other => {
                    return Err(bad(&format!(
                        "unknown option `{other}` (known: tls, tls_ca, password_env, password_file)"
                    )))
                }
            }
        }
        if spec.password.is_none() && std::env::var_os(PASSWORD_ENV).is_some() {
            spec.password = Some(SecretRef::Env(PASSWORD_ENV.into()));
        }
        Ok(spec)
    }

    /// The driver's options: TCP only, timeouts so a server that stops answering stops the run
    /// instead of hanging it.
    pub(crate) fn opts(&self) -> Result<mysql::Opts> {
        let password = match &self.password {
            Some(r) => Some(
                r.resolve(std::path::Path::new("."))
                    .map_err(|e| Error::Journal(format!("journal server {self}: {e}")))?,
            ),
            None => None,
        };
        let t = Some(super::store::SERVER_TIMEOUT);
        let mut o = mysql::OptsBuilder::new()
            .ip_or_hostname(Some(self.host.clone()))
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(password.map(|p| p.expose().to_string()))
            .db_name(Some(self.db.clone()))
            .prefer_socket(false)
            .tcp_connect_timeout(t)
            .read_timeout(t)
            .write_timeout(t);
        if self.tls {
            let ca = self
                .tls_ca
                .clone()
                .map(|p| std::borrow::Cow::Owned(PathBuf::from(p)));
            o = o.ssl_opts(Some(mysql::SslOpts::default().with_root_cert_path(ca)));
        }
        Ok(o.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_are_read_and_bad_ones_named() {
        let s = ServerSpec::parse(
            "mysql://ops@db.example:3307/capstan?tls_ca=/etc/ca.pem&password_file=~/.pw",
        )
        .unwrap();
        assert_eq!(
            (
                s.user.as_str(),
                s.host.as_str(),
                s.port,
                s.db.as_str(),
                s.tls
            ),
            ("ops", "db.example", 3307, "capstan", true)
        );
        assert_eq!(s.tls_ca.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(s.password, Some(SecretRef::File("~/.pw".into())));
        assert_eq!(s.to_string(), "mysql://ops@db.example:3307/capstan");
        assert_eq!(ServerSpec::parse("mysql://ops@h/j").unwrap().port, 3306);
        for (url, says) in [
            (
                "mysql://ops:pw@h/j",
                "a password does not go in the address",
            ),
            ("mysql://h:3306/j", "the user is missing"),
            ("mysql://ops@h:3306", "the database is missing"),
            ("mysql://ops@h:99999/j", "port `99999`"),
            ("mysql://ops@h/j?tls=maybe", "tls=maybe"),
            ("mysql://ops@h/j?sslmode=x", "unknown option `sslmode`"),
        ] {
            let e = ServerSpec::parse(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
        assert!(matches!(
            JournalAt::parse(std::ffi::OsStr::new("/var/lib/j.db")).unwrap(),
            JournalAt::File(_)
        ));
        let e = JournalAt::parse(std::ffi::OsStr::new("postgres://x@y/z"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a file path or mysql://"), "{e}");
    }
}
