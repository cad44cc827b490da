//! The reconcile decision: a plain function of (desired app, current status, dependencies) → what to do.
//! No I/O here; the engine carries the decision out.

use keelson_manifest::{DesiredState, LoadedApp};

use crate::fleet::{AppStatus, Apps};
use crate::phase::Phase;
use crate::verdict::Block;

/// What the engine should do for one app now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The app is where git wants it (or is quarantined); nothing to do.
    Nothing,
    /// A rollout is needed but must wait (e.g. for a dependency); the message says why.
    Wait {
        /// Machine-readable cause (`DependencyNotReady`).
        reason: &'static str,
        /// For people.
        message: String,
    },
    /// `spec.suspend` is set: record `Suspended`, then leave the app alone.
    Suspend,
    /// Start a new rollout of the desired digest.
    StartRollout,
}

/// Decides what to do for `desired` given its current `status` (None for an app never seen),
/// whether a `Keelson-Retry` trailer asks to retry it, and whether its dependencies are ready
/// (`Err(message)` naming the one that is not).
pub fn decide(desired: &LoadedApp, status: Option<&AppStatus>, retry: bool, deps: Result<(), String>) -> Decision {
    let suspended = desired.app.spec.suspend;
    let Some(status) = status else {
        return if suspended { Decision::Suspend } else { start_or_wait(deps) };
    };
    if suspended {
        return if status.phase == Phase::Suspended { Decision::Nothing } else { Decision::Suspend };
    }
    let same_digest = status.desired_digest == desired.digest;
    if status.quarantined_digest.as_deref() == Some(desired.digest.as_str()) && !retry {
        return Decision::Nothing;
    }
    let needs_rollout = match status.phase {
        // Never acted on, interrupted before the first step, blocked, or resumed from suspension:
        // roll out even when the digest is the same as the one last recorded.
        Phase::Pending | Phase::Planned | Phase::Blocked | Phase::Suspended => true,
        // Quarantined digests returned above: what is left failed transiently (retried after a
        // backoff), is a new digest, or was asked to be retried.
        Phase::Failed => true,
        _ => !same_digest,
    };
    if needs_rollout { start_or_wait(deps) } else { Decision::Nothing }
}

fn start_or_wait(deps: Result<(), String>) -> Decision {
    match deps {
        Ok(()) => Decision::StartRollout,
        Err(message) => Decision::Wait { reason: "DependencyNotReady", message },
    }
}

/// Whether every app `app` depends on is Healthy at the digest git wants; `Err` names the first
/// one that is not, and why (not in the repository, held as invalid, not yet healthy).
pub fn dependencies_ready(app: &LoadedApp, desired: &DesiredState, apps: &Apps) -> Result<(), String> {
    for dep in &app.app.spec.depends_on {
        let Some(want) = desired.apps.get(dep) else {
            if desired.invalid_apps.contains(dep) {
                let why = desired.held.get(dep).map_or(String::new(), |w| format!(": {w}"));
                return Err(format!("waiting for {dep}: its manifest is invalid, so it is held{why}"));
            }
            return Err(format!("waiting for {dep}: it is not in the repository"));
        };
        match apps.get(dep) {
            Some(s) if s.phase == Phase::Healthy && s.desired_digest == want.digest => {}
            Some(s) => return Err(format!("waiting for {dep} to become Healthy (it is {})", s.phase)),
            None => return Err(format!("waiting for {dep} to start")),
        }
    }
    Ok(())
}

/// True when `status` says policy already blocked this digest of `app` at `commit`: evaluating it
/// again cannot change the verdict until a new commit (or a retry trailer).
pub fn policy_blocked_at(status: Option<&AppStatus>, app: &LoadedApp, commit: &str) -> bool {
    status.is_some_and(|s| {
        s.phase == Phase::Blocked
            && s.reason == Block::Policy.reason()
            && s.desired_digest == app.digest
            && s.desired_commit == commit
    })
}

/// The commit trailer that lets a commit through the prune guard.
pub const ALLOW_PRUNE_TRAILER: &str = "Keelson-Allow-Prune";

/// The prune guard: `Err(message)` when a commit would delete `removed` of the `total` apps the
/// fleet runs and that is more than `max_percent` percent of them, or every one of them (far
/// more often a broken `source.path` or a bad merge than a wish), unless the commit carries
/// `Keelson-Allow-Prune: true` (`allowed`).
pub fn prune_guard(removed: usize, total: usize, max_percent: u32, allowed: bool) -> Result<(), String> {
    if removed == 0 || allowed {
        return Ok(());
    }
    let all = removed >= total;
    if !all && (removed as u128) * 100 <= u128::from(max_percent) * total as u128 {
        return Ok(());
    }
    let share = if all {
        format!("all {total} apps")
    } else {
        format!("{removed} of {total} apps ({}%, more than the {max_percent}% allowed)", removed * 100 / total.max(1))
    };
    Err(format!(
        "the commit would delete {share}; nothing is pruned. If that is what you want, push a commit \
         with the trailer `{ALLOW_PRUNE_TRAILER}: true`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_manifest::App;

    fn loaded(name: &str, digest: &str, suspend: bool) -> LoadedApp {
        let yaml = serde_json::json!({
            "apiVersion": "keelson.dev/v1alpha1", "kind": "App",
            "metadata": {"name": name},
            "spec": {"image": "img:1", "replicas": 1, "placement": {"cluster": "c"}, "suspend": suspend}
        });
        let app: App = serde_json::from_value(yaml).expect("valid app");
        LoadedApp { app, file: format!("apps/{name}/deploy.yaml"), digest: digest.into() }
    }

    fn status(phase: Phase, digest: &str) -> AppStatus {
        AppStatus { phase, desired_digest: digest.into(), ..AppStatus::pending("web") }
    }

    #[test]
    fn new_app_rolls_out_or_waits_for_dependencies() {
        assert_eq!(decide(&loaded("web", "d1", false), None, false, Ok(())), Decision::StartRollout);
        assert!(matches!(decide(&loaded("web", "d1", false), None, false, Err("db".into())), Decision::Wait { .. }));
    }

    #[test]
    fn same_digest_healthy_does_nothing_new_digest_rolls_out() {
        let s = status(Phase::Healthy, "d1");
        assert_eq!(decide(&loaded("web", "d1", false), Some(&s), false, Ok(())), Decision::Nothing);
        assert_eq!(decide(&loaded("web", "d2", false), Some(&s), false, Ok(())), Decision::StartRollout);
    }

    #[test]
    fn newest_digest_wins_over_an_inflight_rollout() {
        let s = status(Phase::Progressing, "d1");
        assert_eq!(decide(&loaded("web", "d1", false), Some(&s), false, Ok(())), Decision::Nothing);
        assert_eq!(decide(&loaded("web", "d2", false), Some(&s), false, Ok(())), Decision::StartRollout);
    }

    #[test]
    fn failed_digest_is_quarantined_until_changed_or_retried() {
        let mut s = status(Phase::Failed, "d1");
        s.quarantined_digest = Some("d1".into());
        assert_eq!(decide(&loaded("web", "d1", false), Some(&s), false, Ok(())), Decision::Nothing);
        assert_eq!(decide(&loaded("web", "d1", false), Some(&s), true, Ok(())), Decision::StartRollout);
        assert_eq!(decide(&loaded("web", "d2", false), Some(&s), false, Ok(())), Decision::StartRollout);
    }

    #[test]
    fn a_transient_failure_is_not_quarantined_and_is_tried_again() {
        let s = status(Phase::Failed, "d1");
        assert_eq!(s.quarantined_digest, None);
        assert_eq!(decide(&loaded("web", "d1", false), Some(&s), false, Ok(())), Decision::StartRollout);
    }

    #[test]
    fn suspend_is_recorded_once_and_resume_rolls_out() {
        let s = status(Phase::Healthy, "d1");
        assert_eq!(decide(&loaded("web", "d2", true), Some(&s), false, Ok(())), Decision::Suspend);
        let s = status(Phase::Suspended, "d1");
        assert_eq!(decide(&loaded("web", "d2", true), Some(&s), false, Ok(())), Decision::Nothing);
        assert_eq!(decide(&loaded("web", "d3", false), Some(&s), false, Ok(())), Decision::StartRollout);
    }

    #[test]
    fn the_prune_guard_stops_more_than_its_share_and_all_unless_allowed() {
        assert_eq!(prune_guard(49, 100, 50, false), Ok(()));
        assert_eq!(prune_guard(50, 100, 50, false), Ok(()), "exactly the share is allowed");
        let refused = prune_guard(51, 100, 50, false).unwrap_err();
        assert!(refused.contains("51 of 100 apps (51%, more than the 50% allowed)"), "{refused}");
        assert!(refused.contains("Keelson-Allow-Prune: true"), "{refused}");
        assert!(prune_guard(100, 100, 50, false).unwrap_err().contains("all 100 apps"));
        assert!(prune_guard(1, 1, 100, false).is_err(), "all of them is refused whatever the share");
        for (removed, total) in [(49, 100), (51, 100), (100, 100)] {
            assert_eq!(prune_guard(removed, total, 50, true), Ok(()), "the trailer lets {removed}/{total} through");
        }
        assert_eq!(prune_guard(0, 0, 50, false), Ok(()));
    }

    #[test]
    fn blocked_or_interrupted_apps_roll_out_again() {
        for phase in [Phase::Blocked, Phase::Planned, Phase::Pending] {
            let s = status(phase, "d1");
            assert_eq!(decide(&loaded("web", "d1", false), Some(&s), false, Ok(())), Decision::StartRollout, "{phase}");
        }
    }
}
