//! `secret(name)`: a value from the inventory's `[secrets]`, redacted wherever capstan writes.

use std::sync::Arc;

use rhai::Engine;

use super::{bad_input, def, RunCtx};

pub(super) fn register(engine: &mut Engine, run: &Arc<RunCtx>) {
    let r = run.clone();
    def(
        engine,
        "secret",
        &["name: String", "String"],
        r#"
The value of a secret named in the inventory's `[secrets]` table (`db_pw = { env = "DB_PW" }`).
Use it in commands, files and connections; capstan replaces it with `***` in logs, events, plans,
errors, reports and the journal, and journals values that hold it by the secret's name, so an undo
that captured it still works after a crash. A missing name is an error that lists the secrets.

On the host, a command given a secret in its arguments or `env` gets it through a 0600 file the
wrapper reads, not a command line; the command itself still holds it in its argv or environment.
To keep it out of every process, pass it as `stdin` or in `secret_files` (the variable holds the
path of a 0600 file with the value).

```rhai
let token = secret("api_token");
cluster().host("web1").shell("app-ctl login --token-file \"$TOKEN_FILE\"",
    #{ secret_files: #{ TOKEN_FILE: token } });
cluster().host("web1").run(["app-ctl", "login", "--token-stdin"], #{ stdin: token });
```"#,
        move |name: &str| -> Result<String, Box<rhai::EvalAltResult>> {
            let inv = r.exec.inventory();
            match inv.secrets.get(name) {
                Some(s) => Ok(s.expose().to_string()),
                None => Err(bad_input(format!(
                    "no secret `{name}` in the inventory's [secrets] (secrets: {})",
                    if inv.secrets.is_empty() {
                        "none".to_string()
                    } else {
                        inv.secrets.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                ))),
            }
        },
    );
}
