//! Dependency order of the apps of a desired state.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use keelson_manifest::DesiredState;

/// Apps in an order where every app comes after what it depends on (Kahn's algorithm, ties by name).
pub fn dependency_order(desired: &DesiredState) -> Vec<String> {
    let mut waiting_on: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
    for (name, app) in &desired.apps {
        let deps: BTreeSet<&str> =
            app.app.spec.depends_on.iter().map(String::as_str).filter(|d| desired.apps.contains_key(*d)).collect();
        waiting_on.insert(name, deps.len());
        for d in deps {
            dependents.entry(d).or_default().push(name);
        }
    }
    let mut ready: BTreeSet<&str> = waiting_on.iter().filter(|(_, n)| **n == 0).map(|(k, _)| *k).collect();
    let mut order = Vec::with_capacity(desired.apps.len());
    while let Some(name) = ready.pop_first() {
        order.push(name.to_owned());
        waiting_on.remove(name);
        for d in dependents.get(name).into_iter().flatten() {
            if let Some(n) = waiting_on.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    ready.insert(d);
                }
            }
        }
    }
    // Whatever is left sits on a cycle (the loader reports it); keep going in name order rather than stall.
    order.extend(waiting_on.into_keys().map(str::to_owned));
    order
}

#[cfg(test)]
mod tests {
    use keelson_manifest::{App, LoadedApp};

    use super::*;

    fn state(apps: &[(&str, &[&str])]) -> DesiredState {
        let mut desired = DesiredState::default();
        for (name, deps) in apps {
            let mut app = App::default();
            app.metadata.name = (*name).into();
            app.spec.depends_on = deps.iter().map(|d| (*d).to_owned()).collect();
            desired.apps.insert((*name).into(), LoadedApp { app, file: String::new(), digest: String::new() }.into());
        }
        desired
    }

    #[test]
    fn dependencies_come_first_and_ties_go_by_name() {
        let desired = state(&[("web", &["db", "cache"]), ("db", &[]), ("cache", &["db"]), ("batch", &[])]);
        assert_eq!(dependency_order(&desired), ["batch", "db", "cache", "web"]);
    }

    #[test]
    fn a_cycle_does_not_stall_the_rest() {
        let desired = state(&[("a", &["b"]), ("b", &["a"]), ("c", &[])]);
        assert_eq!(dependency_order(&desired), ["c", "a", "b"]);
    }
}
