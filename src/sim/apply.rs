//! What an action does to a simulated host, after the faults and the product models had their turn.

use super::*;

impl World {
    pub(super) fn apply_inner(
        &mut self,
        host: &str,
        action: &Action,
    ) -> std::result::Result<Outcome, Fault> {
        let fail = |m: String| Fault::new(FaultKind::Action, Some(host), format!("{host}: {m}"));
        let mut took = self.duration_of(action.op());
        let outcome = {
            let rules = &mut self.rules;
            let sql_rules = &mut self.sql_rules;
            let stores = &self.sql_stores;
            let models = &mut self.models;
            let mut scratch = SimHost::default();
            // A SQL server named by address only has no simulated host of its own.
            let h = match self.hosts.get_mut(host) {
                Some(h) => h,
                None if matches!(action, Action::Sql { .. }) => &mut scratch,
                None => return Err(fail("not in the simulated world".into())),
            };
            h.now = self.clock;
            let mut model_out = match action {
                Action::Exec { command, stdin, .. } => models
                    .iter_mut()
                    .find_map(|m| m.exec_input(host, command, stdin.as_deref(), h)),
                _ => None,
            };
            match action {
                // `model_ddb` answers every DolphinDB action before this.
                Action::Ddb { .. } => return Err(fail("no DolphinDB node answers".into())),
                Action::Become { .. } => unreachable!("unwrapped at the top of `apply`"),
                // A product's own command: its model answers.
                Action::Exec { .. } if model_out.is_some() => {
                    Outcome::Exec(model_out.take().unwrap_or_default())
                }
                Action::Exec { command, .. } => {
                    let argv0 = match command {
                        Command::Argv(a) => a.first().map(String::as_str),
                        Command::Shell(_) => None,
                    };
                    match answer_by_rule(rules, host, &command.display(), argv0, h) {
                        Some(a) => {
                            took = a.took.unwrap_or(took);
                            Outcome::Exec(a.out)
                        }
                        // No rule: `pgrep`/`pkill` read the process table; anything else is taken
                        // to succeed silently (the plan still shows it).
                        None => Outcome::Exec(h.process_command(command).unwrap_or(ExecOutput {
                            code: Some(0),
                            ..Default::default()
                        })),
                    }
                }
                Action::ReadFile { path } => match h.files.get(&norm(path)) {
                    Some(c) => Outcome::Bytes(c.clone()),
                    None => {
                        return Err(fail(format!(
                            "read {path} failed: cat: {path}: No such file or directory"
                        )))
                    }
                },
                Action::Exists { path } => Outcome::Bool(h.exists(path)),
                Action::Checksum { path } => match h.files.get(&norm(path)) {
                    Some(c) => Outcome::Text(format!("{:x}", sha2::Sha256::digest(c))),
                    None => {
                        return Err(fail(format!(
                            "checksum of {path} failed: No such file or directory"
                        )))
                    }
                },
                Action::FreeSpace { .. } => Outcome::Int(h.free_space as i64),
                Action::DiskUsage { path } => Outcome::Int(h.size_under(path) as i64),
                Action::WriteFile { path, content, .. } => {
                    h.write(path, content.clone());
                    Outcome::Unit
                }
                Action::Mkdir { path } => {
                    h.mkdir_p(path);
                    Outcome::Unit
                }
                Action::Copy { from, to } => {
                    h.copy(from, to).map_err(fail)?;
                    Outcome::Unit
                }
                Action::Move { from, to } => {
                    h.copy(from, to)
                        .map_err(|e| fail(e.replace("cp:", "mv:")))?;
                    h.remove(from);
                    Outcome::Unit
                }
                Action::Remove { path } => {
                    h.remove(path);
                    Outcome::Unit
                }
                Action::ReplaceDir {
                    target,
                    source,
                    keep,
                } => {
                    if !h.dirs.contains(&norm(source)) {
                        return Err(fail(format!("replace {target} failed: cp: cannot stat '{source}': No such file or directory")));
                    }
                    if let Some(k) = keep.as_ref().filter(|_| h.exists(target)) {
                        h.remove(k);
                        h.copy(target, k).map_err(fail)?;
                    }
                    h.remove(target);
                    h.copy(source, target).map_err(fail)?;
                    Outcome::Unit
                }
                Action::Restore { target, saved } => {
                    if h.exists(saved) {
                        h.remove(target);
                        h.copy(saved, target).map_err(fail)?;
                        h.remove(saved);
                    }
                    Outcome::Unit
                }
                Action::Upload { local, remote, .. } => {
                    let data = std::fs::read(local).map_err(|e| {
                        Fault::new(
                            FaultKind::BadInput,
                            Some(host),
                            format!("cannot open {local}: {e}"),
                        )
                    })?;
                    h.write(remote, data);
                    Outcome::Unit
                }
                Action::Sql {
                    kind,
                    statement,
                    params,
                    ..
                } => {
                    let line = crate::sql::one_line(statement);
                    let rule = sql_rules.iter_mut().find(|(r, pat, hp, used)| {
                        hp.as_ref().is_none_or(|p| p.matches(host))
                            && pat.matches(&line)
                            && r.times.is_none_or(|t| *used < t)
                    });
                    match (rule, kind) {
                        (Some((r, _, _, used)), SqlKind::Query | SqlKind::Exec) => {
                            *used += 1;
                            if let Some(code) = r.error_code {
                                let mut f = fail(format!(
                                    "sql: server error {code}: {}\n  statement: {}",
                                    r.error_message.as_deref().unwrap_or("simulated error"),
                                    crate::sql::first_line(statement)
                                ))
                                .with_reason("server");
                                f.code = Some(i64::from(code));
                                return Err(f);
                            }
                            Outcome::Sql(r.result())
                        }
                        // No rule: the server's plain store answers, if it has one.
                        _ => match stores.get(host) {
                            Some(store) => match store.run(*kind, statement, params) {
                                Ok(r) => Outcome::Sql(r),
                                Err(m) => {
                                    let code = if m.contains("no such table") {
                                        1146
                                    } else if m.contains("syntax error") {
                                        1064
                                    } else {
                                        1105
                                    };
                                    let mut f = fail(format!(
                                        "sql: server error {code}: {m}\n  statement: {}",
                                        crate::sql::first_line(statement)
                                    ))
                                    .with_reason("server");
                                    f.code = Some(code);
                                    return Err(f);
                                }
                            },
                            // Reads find nothing, changes change nothing (the plan shows them).
                            None => Outcome::Sql(SqlResult::default()),
                        },
                    }
                }
                Action::Snapshot { source, to } => {
                    if !h.dirs.contains(&norm(source)) {
                        return Err(fail(format!(
                            "copy of {source} failed: cp: cannot stat '{source}': No such file or directory"
                        )));
                    }
                    let need = h.size_under(source);
                    if need >= h.free_space {
                        return Err(fail(format!(
                            "not enough free space for a snapshot of {source} at {to}: it needs {need} bytes and {} are free; nothing was copied",
                            h.free_space
                        ))
                        .with_reason("no_space"));
                    }
                    h.remove(to);
                    h.copy(source, to).map_err(fail)?;
                    let m = h.manifest_of("dir", source, to);
                    h.write(
                        &manifest_path(to),
                        serde_json::to_vec(&m).unwrap_or_default(),
                    );
                    Outcome::Backup(BackupInfo::from_manifest(host, &m, true))
                }
                Action::VerifyBackup { path } => {
                    let m = h.verify(path).map_err(|m| fail(m).with_reason("missing"))?;
                    Outcome::Backup(BackupInfo::from_manifest(host, &m, false))
                }
                Action::MysqlDump {
                    target, db, path, ..
                } => {
                    let body = format!(
                        "-- MariaDB dump (simulated) of {db} from {}\n-- Dump completed\n",
                        target.server()
                    );
                    h.write(path, body.into_bytes());
                    let mut m =
                        h.manifest_of("mysqldump", &format!("{db}@{}", target.server()), path);
                    for f in &mut m.files {
                        f.path.clear();
                    }
                    h.write(
                        &manifest_path(path),
                        serde_json::to_vec(&m).unwrap_or_default(),
                    );
                    Outcome::Backup(BackupInfo::from_manifest(host, &m, true))
                }
                Action::MysqlLoad { path, .. } => {
                    let m = h.verify(path).map_err(|m| fail(m).with_reason("missing"))?;
                    Outcome::Backup(BackupInfo::from_manifest(host, &m, false))
                }
                Action::RestoreSnapshot { snapshot, target } => {
                    let m = h
                        .verify(snapshot)
                        .map_err(|m| fail(m).with_reason("missing"))?;
                    h.remove(target);
                    h.copy(snapshot, target).map_err(fail)?;
                    Outcome::Backup(BackupInfo::from_manifest(host, &m, false))
                }
                Action::Docker { call, .. } => {
                    let mut out = h.docker.apply(call, &mut h.files, &h.dirs);
                    let by_model = if out.code == Some(0) {
                        models
                            .iter_mut()
                            .find_map(|m| m.docker(host, call, &out, h))
                    } else {
                        None
                    };
                    if let Some((o, log)) = by_model {
                        // A product's own script in its container, its services: its model.
                        out = o;
                        for (c, line) in log {
                            h.docker.append_log(&c, &[line]);
                        }
                    } else if let (DockerOp::Exec { name, .. }, Some(0)) = (call, out.code) {
                        // What the command inside prints: the scenario's rules answer.
                        if let Some(a) = answer_by_rule(rules, host, &action.describe(), None, h) {
                            out = a.out;
                            took = a.took.unwrap_or(took);
                            h.docker.append_log(name, &a.log);
                        }
                    }
                    crate::docker::judge(host, call, out)?.map_or(Outcome::Unit, Outcome::Exec)
                }
                Action::WaitPort { port, timeout } => {
                    if h.ports.contains(port) {
                        Outcome::Unit
                    } else {
                        self.clock += *timeout;
                        return Err(Fault::new(
                            FaultKind::Timeout,
                            Some(host),
                            format!(
                                "{host}: port {port} did not accept a connection within {}s",
                                timeout.as_secs()
                            ),
                        ));
                    }
                }
            }
        };
        self.clock += took;
        Ok(outcome)
    }
}
