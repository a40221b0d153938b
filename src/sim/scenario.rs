//! Scenario files: parsing, positioned errors, and the world a scenario starts.

use super::*;

impl Scenario {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_str_at(
            &text,
            &path.display().to_string(),
            path.parent().unwrap_or(Path::new(".")),
        )
    }

    /// Parses scenario TOML; `file` names it in errors, `base` anchors `inventory_file`.
    pub fn from_str_at(text: &str, file: &str, base: &Path) -> Result<Self> {
        let spec: ScenarioSpec =
            toml::from_str(text).map_err(|e| config_error(file, text, e.span(), e.message()))?;
        let inventory = match (spec.inventory, spec.inventory_file) {
            (Some(inv), None) => inv.into_inner().resolve(file, text, base)?,
            (None, Some(p)) => {
                let path = base.join(p.get_ref());
                if !path.exists() {
                    return Err(config_error(
                        file,
                        text,
                        Some(p.span()),
                        &format!("inventory_file: {} does not exist", path.display()),
                    ));
                }
                Inventory::from_file(path)?
            }
            (Some(inv), Some(_)) => {
                return Err(config_error(
                    file,
                    text,
                    Some(inv.span()),
                    "give `inventory` or `inventory_file`, not both",
                ))
            }
            (None, None) => {
                return Err(config_error(
                    file,
                    text,
                    None,
                    "a scenario needs `inventory_file` or an [inventory] table",
                ))
            }
        };
        let mut hosts = BTreeMap::new();
        for (name, st) in spec.hosts {
            if inventory.host(&name).is_none() {
                return Err(config_error(
                    file,
                    text,
                    Some(st.span()),
                    &format!(
                        "hosts.{name}: unknown host `{name}` (the inventory has: {})",
                        inventory.host_names().join(", ")
                    ),
                ));
            }
            hosts.insert(name, st.into_inner());
        }
        let mut rules = Vec::new();
        for (i, r) in spec.rules.into_iter().enumerate() {
            let span = r.span();
            let r = r.into_inner();
            let bad = |m: String| {
                config_error(file, text, Some(span.clone()), &format!("rules[{i}]: {m}"))
            };
            let cmd = glob::Pattern::new(&r.command)
                .map_err(|e| bad(format!("bad command pattern: {e}")))?;
            let host = host_pattern(&inventory, r.host.as_deref()).map_err(bad)?;
            rules.push((r, cmd, host));
        }
        let mut sql_rules = Vec::new();
        for (i, r) in spec.sql.into_iter().enumerate() {
            let span = r.span();
            let r = r.into_inner();
            let bad =
                |m: String| config_error(file, text, Some(span.clone()), &format!("sql[{i}]: {m}"));
            let pat = glob::Pattern::new(&r.statement)
                .map_err(|e| bad(format!("bad statement pattern: {e}")))?;
            let host = match r.host.as_deref() {
                // A server named by address (`127.0.0.1:3306`) is not an inventory host.
                Some(h) if h.contains(':') => {
                    Some(glob::Pattern::new(h).map_err(|e| bad(format!("bad host pattern: {e}")))?)
                }
                h => host_pattern(&inventory, h).map_err(bad)?,
            };
            r.rows_checked().map_err(bad)?;
            sql_rules.push((r, pat, host));
        }
        let mut models = Vec::new();
        for (i, p) in spec.products.into_iter().enumerate() {
            let span = p.span();
            let p = p.into_inner();
            let bad = |m: String| {
                config_error(
                    file,
                    text,
                    Some(span.clone()),
                    &format!("products[{i}]: {m}"),
                )
            };
            let hosts: Vec<String> = match (&p.hosts, &p.group) {
                (Some(_), Some(_)) => return Err(bad("give `hosts` or `group`, not both".into())),
                (None, Some(g)) => inventory.groups.get(g).cloned().ok_or_else(|| {
                    bad(format!(
                        "no group `{g}` in the inventory (groups: {})",
                        inventory
                            .groups
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?,
                (h, None) => {
                    let pat = host_pattern(&inventory, h.as_deref()).map_err(bad)?;
                    inventory
                        .host_names()
                        .into_iter()
                        .filter(|n| pat.as_ref().is_none_or(|p| p.matches(n)))
                        .collect()
                }
            };
            models.push(model::build(&p.model, hosts, &p.settings, &inventory).map_err(bad)?);
        }
        let mut sql_servers = BTreeMap::new();
        for (name, spec) in spec.sql_servers {
            let span = spec.span();
            let spec = spec.into_inner();
            let bad = |m: String| {
                config_error(
                    file,
                    text,
                    Some(span.clone()),
                    &format!("sql_servers.{name}: {m}"),
                )
            };
            if !name.contains(':') && inventory.host(&name).is_none() {
                return Err(bad(format!(
                    "`{name}` is neither an inventory host nor an address:port"
                )));
            }
            // Built once here so a bad statement is reported with the scenario's position.
            sqlstore::SqlStore::new(&spec.init).map_err(bad)?;
            sql_servers.insert(name, spec.init);
        }
        let mut active = Vec::new();
        for (i, f) in spec.faults.into_iter().enumerate() {
            let span = f.span();
            active.push(
                faults::ActiveFault::new(f.into_inner(), &inventory).map_err(|m| {
                    config_error(file, text, Some(span), &format!("faults[{i}]: {m}"))
                })?,
            );
        }
        let params = spec
            .params
            .iter()
            .map(|(k, v)| (k.clone(), crate::inventory::toml_to_json(v)))
            .collect();
        Ok(Scenario {
            source: file.to_string(),
            description: spec.description,
            inventory,
            params,
            defaults: spec.defaults,
            hosts,
            rules,
            sql_rules,
            models,
            faults: active,
            sql_servers,
        })
    }

    /// Adds a product model of the embedder's own (beside the scenario's `[[products]]`).
    pub fn add_model(&mut self, model: Box<dyn model::ProductModel>) {
        self.models.push(model);
    }

    /// Adds a fault given on the command line (`simulate --fail [HOST:]PATTERN[#N]`).
    pub fn add_fault(&mut self, spec: &str) -> Result<()> {
        let f = faults::ActiveFault::from_cli(spec, &self.inventory)
            .map_err(|m| Error::Usage(format!("--fail {spec:?}: {m}")))?;
        self.faults.push(f);
        Ok(())
    }

    /// A fresh world in this scenario's starting state.
    pub fn world(&self) -> World {
        let default_free = self.defaults.free_space.map_or(100 * (1 << 30), |s| s.0);
        let hosts = self
            .inventory
            .hosts
            .iter()
            .map(|h| {
                let st = self.hosts.get(&h.name).cloned().unwrap_or_default();
                let mut host = SimHost {
                    files: BTreeMap::new(),
                    dirs: BTreeSet::new(),
                    free_space: st.free_space.map_or(default_free, |s| s.0),
                    ports: st.ports.iter().copied().collect(),
                    docker: docker::SimDocker::from_spec(st.docker.as_ref()),
                    held_down: BTreeSet::new(),
                    processes: BTreeMap::new(),
                    next_pid: 0,
                    now: Duration::ZERO,
                };
                for p in &st.processes {
                    host.spawn(p);
                }
                host.held_down = self
                    .faults
                    .iter()
                    .filter_map(|f| f.held_port(&h.name))
                    .collect();
                for d in &st.dirs {
                    host.mkdir_p(d);
                }
                for (p, c) in &st.files {
                    host.write(p, c.as_bytes().to_vec());
                }
                (h.name.clone(), host)
            })
            .collect();
        let mut world = World {
            sql_stores: self
                .sql_servers
                .iter()
                .filter_map(|(k, init)| Some((k.clone(), sqlstore::SqlStore::new(init).ok()?)))
                .collect(),
            initial: None,
            hosts,
            rules: self
                .rules
                .iter()
                .map(|(r, c, h)| (r.clone(), c.clone(), h.clone(), 0))
                .collect(),
            sql_rules: self
                .sql_rules
                .iter()
                .map(|(r, c, h)| (r.clone(), c.clone(), h.clone(), 0))
                .collect(),
            durations: self
                .defaults
                .durations
                .iter()
                .map(|(k, v)| (k.clone(), v.0))
                .collect(),
            clock: Duration::ZERO,
            host_locks: self
                .hosts
                .iter()
                .filter_map(|(name, st)| {
                    let l = st.host_lock.as_ref()?;
                    let lease_until = if l.expired {
                        LOCK_EPOCH - 60
                    } else {
                        LOCK_EPOCH + l.lease_left.map_or(600, |d| d.0.as_secs())
                    };
                    Some((
                        name.clone(),
                        crate::hostlock::Holder {
                            run: l.run.clone(),
                            operator: l.operator.clone(),
                            controller: l.controller.clone(),
                            pid: "?".into(),
                            taken: LOCK_EPOCH - 3600,
                            lease_until,
                        },
                    ))
                })
                .collect(),
            models: self.models.clone(),
            faults: self.faults.clone(),
            fired: Vec::new(),
            steps_seen: Default::default(),
            availability: Vec::new(),
            comps: Vec::new(),
            comp_index: Default::default(),
            down: Default::default(),
            sampled_down: Default::default(),
            dirty: Default::default(),
            vanished: Vec::new(),
            comps_generation: Vec::new(),
            full_reads: 0,
            step: None,
            comp_reads: 0,
        };
        world.initial = Some(world.hosts.clone());
        world.sample_availability(true);
        world
    }
}
