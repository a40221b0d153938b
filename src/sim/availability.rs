//! Availability: the components up and the rules broken, sampled after each change at the cost of what changed.

use std::collections::HashMap;

use super::*;

impl World {
    /// Re-reads every component (the start of a run) and records a sample.
    pub(super) fn sample_availability(&mut self, force: bool) {
        if self.models.is_empty() {
            return;
        }
        // What the last sample said was down, by name: the positions may move in a new reading.
        let sampled: Vec<String> = self
            .sampled_down
            .iter()
            .map(|&(mi, ci)| self.comps[mi][ci].name.clone())
            .collect();
        self.comps = self
            .models
            .iter()
            .map(|m| m.components(&self.hosts))
            .collect();
        self.comps_generation = self.models.iter().map(|m| m.generation()).collect();
        // Everything was just read: what the models noted as changed is stale.
        for m in &mut self.models {
            m.take_changed_hosts();
        }
        self.full_reads += 1;
        self.comp_index.clear();
        self.down = vec![Default::default(); self.comps.len()];
        // Positions may have moved: compare everything down now or at the last sample.
        self.dirty.clear();
        for (mi, comps) in self.comps.iter().enumerate() {
            for (ci, c) in comps.iter().enumerate() {
                self.comp_index
                    .entry(c.host.clone())
                    .or_default()
                    .push((mi, ci));
                if !c.up {
                    self.down[mi].insert(ci);
                    self.dirty.insert((mi, ci));
                }
            }
        }
        let at: HashMap<&str, (usize, usize)> = self
            .comps
            .iter()
            .enumerate()
            .flat_map(|(mi, cs)| {
                cs.iter()
                    .enumerate()
                    .map(move |(ci, c)| (c.name.as_str(), (mi, ci)))
            })
            .collect();
        self.sampled_down.clear();
        for name in sampled {
            match at.get(name.as_str()) {
                Some(&slot) => {
                    self.sampled_down.insert(slot);
                    self.dirty.insert(slot);
                }
                // A component no model lists any more: it is no longer down.
                None => self.vanished.push(name),
            }
        }
        self.push_sample(force);
    }

    /// After a product statement that changed a model: re-reads the hosts the models say
    /// changed, or everything when a model does not say, and records a sample when what is up
    /// or a rule changed (a chunk's recovery moves no component but ends a violation).
    pub(super) fn sample_after_statement(&mut self) {
        let changed: Option<Vec<Vec<String>>> = self
            .models
            .iter_mut()
            .map(|m| m.take_changed_hosts())
            .collect();
        match changed {
            Some(hosts) if self.comps.len() == self.models.len() => {
                for h in hosts.iter().flatten() {
                    self.refresh_host(h);
                }
                self.comps_generation = self.models.iter().map(|m| m.generation()).collect();
                self.push_sample(false);
            }
            _ => self.sample_availability(false),
        }
    }

    /// After a change on `host`: re-reads that host's components only, and records a sample when
    /// what is up changed. (A run over a thousand hosts makes thousands of changes.)
    pub(super) fn sample_availability_on(&mut self, host: &str) {
        if self.refresh_host(host) {
            self.push_sample(false);
        }
    }

    /// Re-reads the components on `host`; whether any went up or down.
    pub(super) fn refresh_host(&mut self, host: &str) -> bool {
        let Some(slots) = self.comp_index.get(host) else {
            return false;
        };
        let mut changed = false;
        for (mi, m) in self.models.iter().enumerate() {
            for c in m.components_on(host, &self.hosts) {
                self.comp_reads += 1;
                let slot = slots
                    .iter()
                    .find(|(i, ci)| *i == mi && self.comps[mi][*ci].name == c.name);
                if let Some(&(_, ci)) = slot {
                    let x = &mut self.comps[mi][ci];
                    if x.up != c.up {
                        x.up = c.up;
                        changed = true;
                        self.dirty.insert((mi, ci));
                        if c.up {
                            self.down[mi].remove(&ci);
                        } else {
                            self.down[mi].insert(ci);
                        }
                    }
                }
            }
        }
        changed
    }

    /// Records what is down and which rules are broken, when it changed (always when `force`).
    /// Costs what is down, not the cluster's size.
    pub(super) fn push_sample(&mut self, force: bool) {
        let mut violations = Vec::new();
        for ((m, comps), down) in self.models.iter().zip(&self.comps).zip(&self.down) {
            violations.extend(m.violations(comps, down));
        }
        // What changed since the last sample, in model order: of the components that changed
        // since, those down now and not then, and those down then and not now.
        let (mut went, mut came) = (Vec::new(), Vec::new());
        for slot @ (mi, ci) in std::mem::take(&mut self.dirty) {
            match (
                self.down[mi].contains(&ci),
                self.sampled_down.contains(&slot),
            ) {
                (true, false) => went.push(slot),
                (false, true) => came.push(slot),
                _ => {}
            }
        }
        if !force && went.is_empty() && came.is_empty() && self.vanished.is_empty() {
            if let Some(last) = self.availability.last() {
                if last.violations == violations {
                    return;
                }
            }
        }
        for c in &came {
            self.sampled_down.remove(c);
        }
        self.sampled_down.extend(went.iter().copied());
        let name = |&(mi, ci): &(usize, usize)| self.comps[mi][ci].name.clone();
        self.availability.push(AvailabilitySample {
            at_ms: self.clock.as_millis() as u64,
            step: self.step.clone(),
            went_down: went.iter().map(name).collect(),
            came_up: came
                .iter()
                .map(name)
                .chain(std::mem::take(&mut self.vanished))
                .collect(),
            violations,
        });
    }

    /// Every component of the products, in model order.
    pub fn components(&self) -> Vec<model::Component> {
        self.models
            .iter()
            .flat_map(|m| m.components(&self.hosts))
            .collect()
    }
}
