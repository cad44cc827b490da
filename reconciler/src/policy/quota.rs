//! Team quotas: ceilings on a team's GPUs (replicas × gpu.count) and replicas across the fleet.

use keelson_manifest::policy::Quota;
use keelson_manifest::{App, DesiredState};

use super::{Located, Verdict, VerdictKind};

/// One compiled quota.
#[derive(Debug, Clone)]
pub(crate) struct TeamQuota {
    policy: String,
    index: usize,
    quota: Quota,
    file: String,
    /// Positions of the quota's `gpus` and `replicas` entries.
    gpus_at: (usize, usize),
    replicas_at: (usize, usize),
}

/// GPUs an app holds: replicas × GPUs (or MIG slices) per replica.
pub(crate) fn gpus_of(app: &App) -> u64 {
    let per_replica = app.spec.resources.as_ref().and_then(|r| r.gpu.as_ref()).map_or(0, |g| g.count);
    u64::from(app.spec.replicas) * u64::from(per_replica)
}

impl TeamQuota {
    /// Quota `index` of the policy at `at`.
    pub(crate) fn new(at: &Located<'_>, index: usize, quota: &Quota) -> Self {
        let pos = |field: &str| {
            let p = at.at(&format!("/spec/quotas/{index}/{field}"));
            (p.line, p.col)
        };
        Self {
            policy: at.name().to_string(),
            index,
            quota: quota.clone(),
            file: at.file().to_string(),
            gpus_at: pos("gpus"),
            replicas_at: pos("replicas"),
        }
    }

    /// Blocking verdicts, by app, for every app that counts towards an exceeded ceiling: all the
    /// team's GPU apps when it is over on GPUs, all its apps when it is over on replicas.
    pub(crate) fn evaluate(&self, desired: &DesiredState) -> Vec<(String, Verdict)> {
        let team = self.quota.team.as_str();
        let apps: Vec<&App> =
            desired.apps.values().map(|l| &l.app).filter(|a| a.metadata.team.as_deref() == Some(team)).collect();
        let mut out = Vec::new();
        let mut check = |what: &str, limit: Option<u32>, of: &dyn Fn(&App) -> u64, at: (usize, usize)| {
            let Some(limit) = limit else { return };
            let used: u64 = apps.iter().map(|a| of(a)).sum();
            if used <= u64::from(limit) {
                return;
            }
            let parts: Vec<String> =
                apps.iter().filter(|a| of(a) > 0).map(|a| format!("{} {}", a.metadata.name, of(a))).collect();
            let message = format!(
                "team `{team}` asks for {used} {what} across its apps ({}), over its quota of {limit}; \
                 lower replicas or {what} of one of them, or raise the quota in {}",
                parts.join(", "),
                self.file
            );
            for app in apps.iter().filter(|a| of(a) > 0) {
                out.push((
                    app.metadata.name.clone(),
                    Verdict {
                        policy: self.policy.clone(),
                        rule: format!("quotas[{}].{what}", self.index),
                        kind: VerdictKind::Quota,
                        message: message.clone(),
                        blocking: true,
                        file: self.file.clone(),
                        line: at.0,
                        col: at.1,
                    },
                ));
            }
        };
        check("gpus", self.quota.gpus, &gpus_of, self.gpus_at);
        check("replicas", self.quota.replicas, &|a: &App| u64::from(a.spec.replicas), self.replicas_at);
        out
    }
}
