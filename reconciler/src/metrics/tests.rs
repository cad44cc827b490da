use super::*;

#[test]
fn openmetrics_only_when_asked_for_by_name() {
    for accept in [
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        "application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ] {
        assert!(wants_openmetrics(accept), "{accept}");
    }
    for accept in ["text/plain", "*/*", "text/plain;version=0.0.4", "application/openmetrics-text;q=0", ""] {
        assert!(!wants_openmetrics(accept), "{accept}");
    }
}

#[test]
fn classic_text_names_counters_with_total_and_has_no_eof() {
    let m = Metrics::new();
    m.transition("Healthy", 3);
    m.reconciled(true, Duration::from_millis(5));
    let (text, content_type) = m.render_for(None);
    assert_eq!(content_type, PROMETHEUS_TEXT);
    assert!(text.contains("# TYPE keelson_transitions_total counter\n"), "{text}");
    assert!(text.contains("# HELP keelson_transitions_total "), "{text}");
    assert!(text.contains("keelson_transitions_total{to=\"Healthy\"} 1\n"), "{text}");
    assert!(text.contains("# TYPE keelson_reconcile_duration_seconds histogram\n"), "{text}");
    assert!(text.contains("keelson_reconcile_duration_seconds_bucket{le=\"+Inf\",result=\"ok\"} 1"), "{text}");
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
    let (om, content_type) = m.render_for(Some("application/openmetrics-text"));
    assert_eq!(content_type, OPENMETRICS_TEXT);
    assert!(om.ends_with("# EOF\n") && om.contains("# TYPE keelson_transitions counter\n"), "{om}");
}

#[test]
fn every_family_has_help_text() {
    let (text, _) = Metrics::new().render_for(None);
    let helped: HashSet<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# HELP ")?.split_once(' ')).map(|(n, _)| n).collect();
    let typed: Vec<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' ')).map(|(n, _)| n).collect();
    assert!(typed.len() >= 15, "{text}");
    for name in typed {
        assert!(helped.contains(name), "{name} has no HELP: {text}");
    }
    for name in
        ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"]
    {
        assert!(text.lines().any(|l| l.starts_with(&format!("{name} "))), "{name}: {text}");
    }
    assert!(text.contains("keelson_build_info{version=\""), "{text}");
}

#[test]
fn rollouts_are_timed_from_plan_to_healthy_and_commits_to_healthy() {
    let mut m = Metrics::new();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    m.commit_loaded("old", now - 30);
    m.recorded("api", "Planned", "old", 1, None);
    m.recorded("api", "Healthy", "old", 2, None);
    // As if the daemon had started a minute ago and the commit was made 30 s ago.
    m.started_at = now - 60;
    m.commit_loaded("c1", now - 30);
    m.recorded("web", "Planned", "c1", 1, None);
    m.recorded("web", "Progressing", "c1", 2, None);
    m.recorded("web", "Healthy", "c1", 3, None);
    m.recorded("db", "Blocked", "c1", 4, Some("Policy"));
    // Healthy again without a rollout (a drift check) is not a rollout.
    m.recorded("web", "Healthy", "c1", 5, None);
    let (text, _) = m.render_for(None);
    assert!(text.contains("keelson_rollout_duration_seconds_count{outcome=\"healthy\"} 2\n"), "{text}");
    assert!(
        text.contains("keelson_commit_to_healthy_seconds_count 1\n"),
        "a commit older than the daemon is not timed: {text}"
    );
    assert!(text.contains("keelson_commit_to_healthy_seconds_bucket{le=\"60.0\"} 1\n"), "{text}");
    assert!(text.contains("keelson_commit_to_healthy_seconds_bucket{le=\"10.0\"} 0\n"), "{text}");
    assert!(text.contains("keelson_blocks_total{kind=\"Policy\"} 1\n"), "{text}");
    assert!(text.contains("keelson_ledger_head_seq 5\n"), "{text}");
}

#[test]
fn provider_errors_by_instance_kind_and_class() {
    let m = Metrics::new();
    m.provider_call("k8s-prod", "apply", Ok("created"), Duration::from_millis(20));
    m.provider_call("k8s-prod", "apply", Err(("unavailable", "transient")), Duration::from_secs(2));
    let (text, _) = m.render_for(None);
    assert!(
        text.contains(
            "keelson_provider_errors_total{instance=\"k8s-prod\",op=\"apply\",kind=\"unavailable\",class=\"transient\"} 1\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("keelson_provider_call_duration_seconds_count{instance=\"k8s-prod\",op=\"apply\"} 2\n"),
        "{text}"
    );
    assert!(text.contains("keelson_provider_calls_total{op=\"apply\",outcome=\"unavailable\"} 1\n"), "{text}");
}

#[test]
fn app_info_follows_the_fleet_and_forgets_apps_that_left() {
    let m = Metrics::new();
    let web = AppInfo {
        app: "web".into(),
        phase: "Healthy".into(),
        in_sync: true,
        team: "shop".into(),
        cluster: "prod".into(),
    };
    let db = AppInfo { app: "db".into(), phase: "Failed".into(), ..AppInfo::default() };
    m.observe_fleet([web.clone(), db], Some("2026-12-01T12:00:00.500000Z"));
    m.observe_fleet([web], Some("2026-12-01T12:00:00.500000Z"));
    let (text, _) = m.render_for(None);
    assert!(
        text.contains(
            "keelson_app_info{app=\"web\",phase=\"Healthy\",sync_status=\"Synced\",team=\"shop\",cluster=\"prod\"} 1\n"
        ),
        "{text}"
    );
    assert!(!text.contains("app=\"db\""), "{text}");
    assert!(text.contains("keelson_last_sync_timestamp_seconds 1796126400.5\n"), "{text}");
}
