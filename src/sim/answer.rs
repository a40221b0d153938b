//! The product models' answers: DolphinDB scripts and SQL statements to the servers they keep.

use super::*;

impl World {
    /// A DolphinDB action: a product model answers for the node at its endpoint, and where no
    /// model has a node there, nothing listens (as on a real network).
    pub(super) fn model_ddb(
        &mut self,
        label: &str,
        action: &Action,
    ) -> Option<std::result::Result<Outcome, Fault>> {
        let Action::Ddb {
            target,
            kind,
            script,
        } = action
        else {
            return None;
        };
        let endpoint = target.endpoint();
        let hosts = &mut self.hosts;
        let now = self.clock;
        let answer = self
            .models
            .iter_mut()
            .find_map(|m| m.ddb(&endpoint, *kind, script, hosts, now))
            .unwrap_or_else(|| {
                Err((
                    "connect",
                    "connect: Connection refused (os error 111)".into(),
                ))
            });
        self.clock += self.duration_of(action.op());
        Some(match answer {
            Ok(v) => Ok(Outcome::Ddb(v)),
            Err((reason, message)) => Err(Fault::new(
                FaultKind::Action,
                Some(label),
                format!("{label}: dolphindb {}: {message}", target.server()),
            )
            .with_reason(reason)),
        })
    }

    /// A product model's answer to a SQL action, when one of them takes it.
    pub(super) fn model_sql(
        &mut self,
        server: &str,
        action: &Action,
    ) -> Option<std::result::Result<Outcome, Fault>> {
        let Action::Sql {
            target,
            kind,
            statement,
            params,
        } = action
        else {
            return None;
        };
        let hosts = &mut self.hosts;
        let answer = self
            .models
            .iter_mut()
            .find_map(|m| m.sql(server, target.id, *kind, statement, params, hosts))?;
        self.clock += self.duration_of(action.op());
        // The client's own failures read as a real client reports them (src/sql: classify).
        let client = |what: String, with_statement: bool| {
            let mut msg = format!("{server}: sql {}: {what}", target.server());
            if with_statement {
                msg.push_str(&format!(
                    "\n  statement: {}",
                    crate::sql::first_line(statement)
                ));
            }
            Fault::new(FaultKind::Unreachable, Some(server), msg)
        };
        Some(match answer {
            Ok(r) => Ok(Outcome::Sql(r)),
            // A model's "nothing listens there" is the client's connect failure, as on a network.
            Err((2003, message)) => {
                Err(client(format!("cannot connect: {message}"), false).with_reason("connect"))
            }
            Err((2013, message)) => {
                Err(client(format!("connection lost: {message}"), true).with_reason("lost"))
            }
            Err((code, message)) => {
                let mut f = Fault::new(
                    FaultKind::Action,
                    Some(server),
                    format!(
                        "{server}: sql: server error {code}: {message}\n  statement: {}",
                        crate::sql::first_line(statement)
                    ),
                )
                .with_reason("server");
                f.code = Some(i64::from(code));
                Err(f)
            }
        })
    }
}
