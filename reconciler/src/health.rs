//! Readiness, decided in one place.
//!
//! `/readyz` is 503 only while no snapshot has ever loaded or the ledger cannot be written: then
//! the daemon can do nothing useful (or nothing it could record). Every other problem (a source
//! error, a status branch that is not being written, held or failed apps) keeps it 200, so a
//! remote outage never takes the daemon out of a load balancer, and is named in the body of
//! `/readyz` and in `/api/v1/status`.

use serde::Serialize;

use crate::engine::state::SourceError;
use crate::ledger::WriteState;
use crate::record::RecordState;
use crate::source::remote::FetchError;

/// Everything readiness depends on, read from the engine, the ledger and the recorder.
#[derive(Debug, Clone)]
pub struct Signals<'a> {
    /// True once a snapshot of the tracked branch has been loaded and reconciled.
    pub snapshot_loaded: bool,
    /// Whether the ledger can be written.
    pub ledger: &'a WriteState,
    /// The source's current error, if any.
    pub source_error: Option<&'a SourceError>,
    /// What is wrong with the loaded commit itself (a deleted tracked branch, a commit with no apps).
    pub source_warnings: &'a [String],
    /// What the status-branch recorder is doing (None when the daemon has no status branch).
    pub status_branch: Option<&'a RecordState>,
    /// Why fetching a remote source fails, while it does.
    pub fetch_error: Option<&'a FetchError>,
    /// Why pushing the status branch to the remote fails, while it does.
    pub push_error: Option<&'a str>,
    /// Apps that are Blocked or Failed, by name.
    pub held_apps: Vec<&'a str>,
}

/// Which part of the daemon a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Component {
    Source,
    Ledger,
    StatusBranch,
    Apps,
}

/// One problem, as `/readyz` and `/api/v1/status` list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    pub component: Component,
    pub message: String,
    /// True when this problem alone makes the daemon not ready.
    pub blocks_readiness: bool,
}

/// The verdict: ready or not, and every problem known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    pub ready: bool,
    pub problems: Vec<Problem>,
}

/// Decides readiness (see the module documentation).
pub fn readiness(s: &Signals<'_>) -> Readiness {
    let mut problems = Vec::new();
    let mut push = |component, message: String, blocks_readiness| {
        problems.push(Problem { component, message, blocks_readiness });
    };
    if !s.snapshot_loaded {
        let why = match (s.fetch_error, s.source_error) {
            (Some(e), _) => format!("no commit of the tracked branch has been loaded yet: {}", e.message),
            (None, Some(e)) => format!("no commit of the tracked branch has been loaded yet: {}", e.message),
            (None, None) => "the first commit has not been reconciled yet".to_owned(),
        };
        push(Component::Source, why, true);
    } else if let Some(e) = s.fetch_error {
        push(
            Component::Source,
            format!(
                "fetching the remote fails since {}: {}; the last fetched commit stays in force; attempt {}, next in {} ms",
                e.since, e.message, e.attempts, e.retry_in_ms
            ),
            false,
        );
    }
    if let Some(e) = s.source_error.filter(|_| s.snapshot_loaded) {
        let commit = e.commit.as_deref().map(|c| format!(" (commit {})", crate::engine::short(c))).unwrap_or_default();
        push(
            Component::Source,
            format!(
                "the source cannot be read{commit}: {}; the last loaded commit stays in force; attempt {}, next in {} ms",
                e.message, e.attempts, e.retry_in_ms
            ),
            false,
        );
    }
    for warning in s.source_warnings {
        push(Component::Source, warning.clone(), false);
    }
    match s.ledger {
        WriteState::Writable => {}
        WriteState::Failing { message, since } => push(
            Component::Ledger,
            format!(
                "the audit ledger cannot be written (since {since}): {message}; nothing is rolled out until an append succeeds"
            ),
            true,
        ),
        WriteState::Replaced { message } => push(
            Component::Ledger,
            format!(
                "the audit ledger cannot be written: it was replaced under the daemon ({message}); nothing is applied; restart the daemon on the right ledger"
            ),
            true,
        ),
    }
    match s.status_branch {
        None | Some(RecordState::Recording) => {}
        Some(RecordState::Failing { message, since }) => push(
            Component::StatusBranch,
            format!("status branch commits fail (since {since}): {message}; the ledger keeps every transition"),
            false,
        ),
        Some(RecordState::Stopped { message }) => push(Component::StatusBranch, message.clone(), false),
    }
    if let Some(message) = s.push_error {
        push(
            Component::StatusBranch,
            format!(
                "pushing the status branch fails: {message}; its commits wait in the cache and are pushed once it works"
            ),
            false,
        );
    }
    if !s.held_apps.is_empty() {
        const SHOWN: usize = 20;
        let mut names = s.held_apps.iter().take(SHOWN).copied().collect::<Vec<_>>().join(", ");
        if s.held_apps.len() > SHOWN {
            names.push_str(&format!(" and {} more", s.held_apps.len() - SHOWN));
        }
        push(
            Component::Apps,
            format!("{} app(s) Blocked or Failed: {names}; see /api/v1/apps", s.held_apps.len()),
            false,
        );
    }
    Readiness { ready: !problems.iter().any(|p| p.blocks_readiness), problems }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    #[test]
    fn a_commit_with_no_apps_is_a_problem_that_keeps_the_daemon_ready() {
        let warnings = ["commit 0123456789ab has no apps at all".to_owned()];
        let verdict = super::readiness(&super::Signals {
            snapshot_loaded: true,
            ledger: &super::WriteState::Writable,
            source_error: None,
            source_warnings: &warnings,
            fetch_error: None,
            push_error: None,
            status_branch: None,
            held_apps: vec![],
        });
        assert!(verdict.ready);
        assert_eq!(verdict.problems.len(), 1);
        assert_eq!(verdict.problems[0].component, super::Component::Source);
        assert!(verdict.problems[0].message.contains("no apps at all"));
    }

    use super::*;

    fn source_error() -> SourceError {
        SourceError {
            message: "object 1234 is corrupt".into(),
            commit: Some("abcdef0123456789".into()),
            since: "2026-11-23T10:00:00Z".into(),
            attempts: 3,
            retry_in_ms: 4000,
        }
    }

    #[rstest]
    #[case::all_well(true, WriteState::Writable, false, RecordState::Recording, 0, true, &[])]
    #[case::first_snapshot_not_loaded(false, WriteState::Writable, false, RecordState::Recording, 0, false, &[Component::Source])]
    #[case::corrupt_first_commit(false, WriteState::Writable, true, RecordState::Recording, 0, false, &[Component::Source])]
    #[case::source_error_after_a_load(true, WriteState::Writable, true, RecordState::Recording, 0, true, &[Component::Source])]
    #[case::ledger_write_failing(true, WriteState::Failing { message: "disk I/O error".into(), since: "t".into() }, false, RecordState::Recording, 0, false, &[Component::Ledger])]
    #[case::ledger_replaced(true, WriteState::Replaced { message: "deleted".into() }, false, RecordState::Recording, 0, false, &[Component::Ledger])]
    #[case::foreign_status_tip(true, WriteState::Writable, false, RecordState::Stopped { message: "tip edited".into() }, 0, true, &[Component::StatusBranch])]
    #[case::status_commits_failing(true, WriteState::Writable, false, RecordState::Failing { message: "gone".into(), since: "t".into() }, 0, true, &[Component::StatusBranch])]
    #[case::blocked_apps(true, WriteState::Writable, false, RecordState::Recording, 2, true, &[Component::Apps])]
    #[case::everything_at_once(false, WriteState::Failing { message: "full".into(), since: "t".into() }, true, RecordState::Stopped { message: "x".into() }, 1, false,
        &[Component::Source, Component::Ledger, Component::StatusBranch, Component::Apps])]
    fn readiness_table(
        #[case] snapshot_loaded: bool,
        #[case] ledger: WriteState,
        #[case] source_failing: bool,
        #[case] status_branch: RecordState,
        #[case] held: usize,
        #[case] ready: bool,
        #[case] named: &[Component],
    ) {
        let error = source_error();
        let held_apps: Vec<&str> = ["web", "api"].into_iter().take(held).collect();
        let verdict = readiness(&Signals {
            snapshot_loaded,
            ledger: &ledger,
            source_error: source_failing.then_some(&error),
            source_warnings: &[],
            fetch_error: None,
            push_error: None,
            status_branch: Some(&status_branch),
            held_apps,
        });
        assert_eq!(verdict.ready, ready, "{verdict:?}");
        let components: Vec<Component> = verdict.problems.iter().map(|p| p.component).collect();
        assert_eq!(components, named, "{verdict:?}");
        // Only a missing first snapshot and an unwritable ledger block readiness.
        for p in &verdict.problems {
            assert_eq!(
                p.blocks_readiness,
                matches!(p.component, Component::Ledger) || !snapshot_loaded && p.component == Component::Source,
                "{p:?}"
            );
        }
        if source_failing {
            assert!(verdict.problems[0].message.contains("object 1234 is corrupt"), "{verdict:?}");
        }
    }

    #[test]
    fn many_held_apps_are_summarised() {
        let names: Vec<String> = (0..25).map(|i| format!("app{i}")).collect();
        let verdict = readiness(&Signals {
            snapshot_loaded: true,
            ledger: &WriteState::Writable,
            source_error: None,
            source_warnings: &[],
            fetch_error: None,
            push_error: None,
            status_branch: None,
            held_apps: names.iter().map(String::as_str).collect(),
        });
        assert!(verdict.ready);
        assert!(verdict.problems[0].message.contains("25 app(s)"), "{verdict:?}");
        assert!(verdict.problems[0].message.ends_with("and 5 more; see /api/v1/apps"), "{verdict:?}");
    }
}
