//! A [`RevisionPlan`] for people: text for a terminal, Markdown for a pull-request comment that
//! renders the same on GitHub and GitLab whatever the messages in it hold.

use std::fmt::Write as _;

use keelson_core::event::ChangeKind as ResourceChangeKind;
use serde_json::Value;

use super::{AppChange, AppResult, ChangeKind, PlanVerdict, ResourcePlan, RevisionPlan, RiskKind, Summary};

fn short(commit: &str) -> &str {
    &commit[..12.min(commit.len())]
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn show(v: &Option<Value>) -> String {
    match v {
        None => "(absent)".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

fn symbol(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Added => "+",
        ChangeKind::Changed => "~",
        ChangeKind::Removed => "-",
        ChangeKind::Invalid => "!",
    }
}

fn resource_symbol(r: &ResourcePlan) -> &'static str {
    match r.change {
        ResourceChangeKind::Create => "+",
        ResourceChangeKind::Delete if r.kept => "=",
        ResourceChangeKind::Delete => "-",
        ResourceChangeKind::Update | ResourceChangeKind::Unknown => "~",
    }
}

fn result_word(r: AppResult) -> &'static str {
    match r {
        AppResult::Invalid => "invalid: held as it runs",
        AppResult::CannotRender => "cannot be rendered",
        AppResult::Denied => "denied by policy",
        AppResult::Frozen => "held by a freeze window",
        AppResult::Deletes => "removed",
        AppResult::Warned => "admitted with warnings",
        AppResult::Clean => "admitted",
    }
}

fn risk_word(k: RiskKind) -> &'static str {
    match k {
        RiskKind::GpuCount => "gpu count",
        RiskKind::Capacity => "spot/on-demand",
        RiskKind::Strategy => "strategy",
        RiskKind::PruneShare => "prune share",
        RiskKind::Freeze => "freeze",
    }
}

/// `1 to add, 1 to change, …`: every app, each counted once.
fn counts(s: &Summary) -> String {
    let parts = [
        format!("{} to add", s.added),
        format!("{} to change", s.changed),
        format!("{} to remove", s.removed),
        format!("{} unchanged", s.unchanged),
        format!("{} invalid", s.invalid),
    ];
    let mut findings = Vec::new();
    if s.denied > 0 {
        findings.push(format!("{} denied", s.denied));
    }
    if s.frozen > 0 {
        findings.push(format!("{} frozen", s.frozen));
    }
    if s.cannot_render > 0 {
        findings.push(format!("{} cannot be rendered", s.cannot_render));
    }
    if s.deleted_resources > 0 {
        findings.push(format!("{} deleted", plural(s.deleted_resources, "resource", "resources")));
    }
    let mut out = format!("{}: {}", plural(s.apps(), "app", "apps"), parts.join(", "));
    if !findings.is_empty() {
        let _ = write!(out, "; {}", findings.join(", "));
    }
    out
}

/// The object as YAML (for people), JSON if it cannot be written as YAML.
fn yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|_| serde_json::to_string_pretty(v).unwrap_or_default())
}

fn with_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// A resource's change as diff lines: the whole object for a create or a delete, a unified diff
/// of its YAML (`similar`) for an update.
fn resource_diff(r: &ResourcePlan) -> String {
    let prefixed = |sign: char, v: &Value| yaml(v).lines().map(|l| format!("{sign} {l}\n")).collect::<String>();
    match (&r.before, &r.object) {
        (None, Some(after)) => prefixed('+', after),
        (Some(before), None) => prefixed('-', before),
        (Some(before), Some(after)) => {
            let (a, b) = (with_newline(yaml(before)), with_newline(yaml(after)));
            let diff = similar::TextDiff::from_lines(&a, &b);
            diff.unified_diff().context_radius(3).header("base", "head").to_string()
        }
        (None, None) => String::new(),
    }
}

/// Keeps a terminal's control sequences out of the output: messages come from the repository.
fn plain(s: &str) -> String {
    s.chars().map(|c| if c.is_control() && c != '\n' { '?' } else { c }).collect()
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

/// The removals, first and loudest: what the change deletes.
/// Apps that prune come first: removing them is what their authors asked the daemon to carry out.
fn deletion_lines(plan: &RevisionPlan) -> Vec<(&AppChange, Vec<&ResourcePlan>)> {
    let mut lines: Vec<(&AppChange, Vec<&ResourcePlan>)> =
        plan.changes.iter().filter(|c| c.change == ChangeKind::Removed).map(|c| (c, c.deletes().collect())).collect();
    lines.sort_by_key(|(c, _)| !c.prune);
    lines
}

/// A message on one line of a terminal block: later lines indented under the first.
fn inline(s: &str) -> String {
    plain(s).replace('\n', "\n        ")
}

fn removal_note(c: &AppChange) -> &'static str {
    if c.prune {
        "sync.prune: true"
    } else if c.resources.iter().any(|r| r.kept) {
        "sync.prune: false: its resources keep running, no longer managed"
    } else {
        "sync.prune is not set: removing an app deletes what it applied"
    }
}

/// The plan for a terminal.
pub fn render_text(plan: &RevisionPlan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Keelson plan {}..{}", short(&plan.base), short(&plan.head));
    for (c, deletes) in deletion_lines(plan) {
        let _ = writeln!(
            out,
            "\n!! DELETES {}: {} is removed ({})",
            plural(deletes.len(), "resource", "resources"),
            c.app,
            removal_note(c)
        );
        for r in deletes {
            let _ = writeln!(out, "!!   - {}", r.resource);
        }
        if let Some(e) = &c.render_error {
            let _ = writeln!(out, "!!   {}", plain(e));
        }
    }
    let _ = writeln!(out, "\n{}", counts(&plan.summary));
    if let Some(f) = &plan.freeze {
        let held = if f.apps.is_empty() {
            "holds no change of this plan".to_owned()
        } else {
            format!("holds {}", f.apps.join(", "))
        };
        let _ = writeln!(out, "\nFreeze: {} open, {held}", plural(f.windows.len(), "window", "windows"));
        for w in &f.windows {
            let state = if w.blocking { "" } else { " (overridden)" };
            let _ = writeln!(out, "  {}/{}{state} at {}: {}", w.policy, w.rule, w.rule_at, inline(&w.message));
        }
    }
    if !plan.risks.is_empty() {
        out.push_str("\nRisks:\n");
        for r in &plan.risks {
            let app = r.app.as_deref().map(|a| format!("{a}: ")).unwrap_or_default();
            let _ = writeln!(out, "  {:<14} {app}{}", risk_word(r.kind), plain(&r.message));
        }
    }
    let _ = writeln!(out, "\nCost: {}", plain(&plan.cost.message));
    for c in &plan.changes {
        let mut meta = vec![result_word(c.result).to_owned()];
        if let Some(team) = &c.team {
            meta.push(format!("team {team}"));
        }
        if let Some(p) = &c.placement {
            meta.push(format!("cluster {}", p.cluster));
            meta.push(match &p.server_class {
                Some(class) => format!("{} {class}", p.capacity),
                None => p.capacity.clone(),
            });
        }
        if c.prune {
            meta.push("prune".into());
        }
        let _ = writeln!(out, "\n{} {} ({}) — {}", symbol(c.change), c.app, c.file, meta.join(" · "));
        for d in &c.problems {
            let _ = writeln!(out, "    {}", plain(&d.to_string()));
        }
        if c.change == ChangeKind::Changed {
            for f in &c.fields {
                let _ = writeln!(out, "    {}: {} → {}", f.pointer, plain(&show(&f.old)), plain(&show(&f.new)));
            }
        }
        if let Some(e) = c.render_error.as_ref().filter(|_| c.change != ChangeKind::Removed) {
            let _ = writeln!(out, "    cannot render: {}", plain(e));
        }
        for v in &c.verdicts {
            text_verdict(&mut out, v);
        }
        if c.frozen {
            out.push_str("    held by the freeze window above\n");
        }
        for r in &c.resources {
            let kept = if r.kept { " (kept: sync.prune is off)" } else { "" };
            let _ = writeln!(out, "    {} {}{kept}", resource_symbol(r), r.resource);
            if c.change != ChangeKind::Removed && !r.kept {
                out.push_str(&indent(&plain(&resource_diff(r)), "        "));
            }
        }
    }
    if !plan.diagnostics.is_empty() {
        out.push_str("\nProblems at head:\n");
        for d in &plan.diagnostics {
            let _ = writeln!(out, "  {}", plain(&d.to_string()));
        }
    }
    out
}

fn text_verdict(out: &mut String, v: &PlanVerdict) {
    let level = if v.verdict.blocking { "DENY" } else { "warn" };
    let _ = writeln!(
        out,
        "    {level} {} {}/{}: {}",
        v.verdict.kind,
        v.verdict.policy,
        v.verdict.rule,
        inline(&v.verdict.message)
    );
    let _ = writeln!(out, "        rule  {}", v.rule_at);
    for f in &v.fields_at {
        let _ = writeln!(out, "        field {f} ({})", f.pointer);
    }
}

/// Text that cannot change the structure of a GitHub or GitLab comment: every ASCII mark that
/// Markdown or HTML reads (emphasis, code, links, tables, tags, entities, headings) becomes a
/// numeric character reference, which both render as the character itself; line breaks become
/// `<br>` so a message never ends a table row or starts a block.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("<br>"),
            '\r' => {}
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '&' | '|' | '#' | '~' | '!' | '{' | '}' | '+' | '^'
            | '"' | '=' | '$' => {
                let _ = write!(out, "&#{};", c as u32);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Inline code that stays inline code whatever it holds (a backtick code span cannot hold every
/// string; `<code>` with escaped content can, in tables too).
fn code(s: &str) -> String {
    format!("<code>{}</code>", md(s))
}

/// A fenced block whose fence is longer than any backtick run inside it, so content never closes it.
fn fenced(info: &str, content: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in content.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat((longest + 1).max(3));
    format!("{fence}{info}\n{}{fence}\n", with_newline(content.to_owned()))
}

fn md_result(r: AppResult) -> &'static str {
    match r {
        AppResult::Invalid => ":x: invalid",
        AppResult::CannotRender => ":x: cannot render",
        AppResult::Denied => ":no_entry: denied",
        AppResult::Frozen => ":snowflake: frozen",
        AppResult::Deletes => ":wastebasket: deletes",
        AppResult::Warned => ":warning: warnings",
        AppResult::Clean => ":white_check_mark: ok",
    }
}

/// The plan as Markdown for a pull-request comment.
pub fn render_markdown(plan: &RevisionPlan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### Keelson plan `{}`..`{}`\n", short(&plan.base), short(&plan.head));
    for (c, deletes) in deletion_lines(plan) {
        let list: Vec<String> = deletes.iter().map(|r| code(&r.resource)).collect();
        let _ = writeln!(
            out,
            "> :rotating_light: **{} is removed: deletes {}** ({}){}{}\n",
            code(&c.app),
            plural(deletes.len(), "resource", "resources"),
            md(removal_note(c)),
            if list.is_empty() { String::new() } else { format!(": {}", list.join(", ")) },
            c.render_error.as_ref().map(|e| format!("<br>{}", md(e))).unwrap_or_default(),
        );
    }
    let _ = writeln!(out, "**{}**\n", md(&counts(&plan.summary)));
    if let Some(f) = &plan.freeze {
        let held: Vec<String> = f.apps.iter().map(|a| code(a)).collect();
        let held = if held.is_empty() { "no change of this plan".to_owned() } else { held.join(", ") };
        let _ = writeln!(
            out,
            "> :snowflake: **Freeze**: {} open, holding {held}",
            plural(f.windows.len(), "window", "windows")
        );
        for w in &f.windows {
            let state = if w.blocking { "" } else { " (overridden)" };
            let _ = writeln!(
                out,
                "> - {}{state} at {}: {}",
                code(&format!("{}/{}", w.policy, w.rule)),
                code(&w.rule_at.to_string()),
                md(&w.message)
            );
        }
        out.push('\n');
    }
    if !plan.changes.is_empty() {
        out.push_str("| | app | result | team | cluster | placement | fields | resources |\n");
        out.push_str("|---|---|---|---|---|---|---|---|\n");
        for c in &plan.changes {
            let n = |k| c.resources.iter().filter(|r| r.change == k && !r.kept).count();
            let kept = c.resources.iter().filter(|r| r.kept).count();
            let mut resources = format!(
                "+{} ~{} -{}",
                n(ResourceChangeKind::Create),
                n(ResourceChangeKind::Update),
                n(ResourceChangeKind::Delete)
            );
            if kept > 0 {
                let _ = write!(resources, " ({kept} kept)");
            }
            let (cluster, placement) = match &c.placement {
                Some(p) => (
                    code(&p.cluster),
                    md(&match &p.server_class {
                        Some(class) => format!("{} {class}", p.capacity),
                        None => p.capacity.clone(),
                    }),
                ),
                None => ("".into(), "".into()),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {cluster} | {placement} | {} | {} |",
                md(symbol(c.change)),
                code(&c.app),
                md_result(c.result),
                c.team.as_deref().map(md).unwrap_or_default(),
                c.fields.len(),
                md(&resources),
            );
        }
        out.push('\n');
    }
    if !plan.risks.is_empty() {
        out.push_str("#### Risks\n\n");
        for r in &plan.risks {
            let app = r.app.as_deref().map(|a| format!("{} ", code(a))).unwrap_or_default();
            let _ = writeln!(out, "- :warning: **{}** {app}{}", md(risk_word(r.kind)), md(&r.message));
        }
        out.push('\n');
    }
    let _ = writeln!(out, "**Cost:** {}\n", md(&plan.cost.message));
    let verdicts: Vec<(&AppChange, &PlanVerdict)> =
        plan.changes.iter().flat_map(|c| c.verdicts.iter().map(move |v| (c, v))).collect();
    if !verdicts.is_empty() {
        out.push_str("#### Policy verdicts\n\n| app | verdict | policy / rule | message | field | rule at |\n");
        out.push_str("|---|---|---|---|---|---|\n");
        for (c, v) in verdicts {
            let level = if v.verdict.blocking { "**deny**" } else { "warn" };
            let fields: Vec<String> =
                v.fields_at.iter().map(|f| format!("{} {}", code(&f.to_string()), code(&f.pointer))).collect();
            let _ = writeln!(
                out,
                "| {} | {level} {} | {} | {} | {} | {} |",
                code(&c.app),
                md(&v.verdict.kind.to_string()),
                code(&format!("{}/{}", v.verdict.policy, v.verdict.rule)),
                md(&v.verdict.message),
                fields.join("<br>"),
                code(&v.rule_at.to_string()),
            );
        }
        out.push('\n');
    }
    let invalid: Vec<&AppChange> = plan.changes.iter().filter(|c| c.change == ChangeKind::Invalid).collect();
    if !invalid.is_empty() {
        out.push_str("#### Invalid apps (held as they run, never pruned)\n\n");
        for c in invalid {
            let _ = writeln!(out, "- {}", code(&c.app));
            for d in &c.problems {
                let _ = writeln!(out, "  - {}", code(&d.to_string()));
            }
        }
        out.push('\n');
    }
    for c in plan.changes.iter().filter(|c| c.render_error.is_some() && c.change != ChangeKind::Removed) {
        let _ =
            writeln!(out, ":x: {} cannot be rendered: {}\n", code(&c.app), md(c.render_error.as_deref().unwrap_or("")));
    }
    for c in plan
        .changes
        .iter()
        .filter(|c| matches!(c.change, ChangeKind::Added | ChangeKind::Changed | ChangeKind::Removed))
    {
        if c.resources.is_empty() && c.fields.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "<details><summary>{} {}: {}, {}</summary>\n",
            md(symbol(c.change)),
            code(&c.app),
            plural(c.fields.len(), "field", "fields"),
            plural(c.resources.len(), "resource", "resources"),
        );
        if c.change == ChangeKind::Changed && !c.fields.is_empty() {
            let mut lines = String::new();
            for f in &c.fields {
                if f.old.is_some() {
                    let _ = writeln!(lines, "- {}: {}", f.pointer, show(&f.old));
                }
                if f.new.is_some() {
                    let _ = writeln!(lines, "+ {}: {}", f.pointer, show(&f.new));
                }
            }
            out.push_str(&fenced("diff", &lines));
            out.push('\n');
        }
        for r in &c.resources {
            let what = match r.change {
                ResourceChangeKind::Create => "**create**",
                ResourceChangeKind::Delete if r.kept => "**kept** (sync.prune is off)",
                ResourceChangeKind::Delete => "**delete**",
                ResourceChangeKind::Update | ResourceChangeKind::Unknown => "**update**",
            };
            let _ = writeln!(out, "{what} {}\n", code(&r.resource));
            let diff = if r.kept { String::new() } else { resource_diff(r) };
            if !diff.is_empty() {
                out.push_str(&fenced("diff", &diff));
                out.push('\n');
            }
        }
        out.push_str("</details>\n\n");
    }
    if !plan.diagnostics.is_empty() {
        out.push_str("#### Problems\n\n");
        for d in &plan.diagnostics {
            let _ = writeln!(out, "- {}", code(&d.to_string()));
        }
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_text_cannot_open_code_tables_or_tags() {
        let hostile = "a `b` | c <details><script>x</script> *d* [l](u) ~~s~~\nnext";
        let escaped = md(hostile);
        assert!(escaped.contains("<br>"), "{escaped}");
        let rest = escaped.replace("<br>", "");
        for bad in ['`', '|', '<', '>', '*', '[', ']', '~', '\n'] {
            assert!(!rest.contains(bad), "{bad:?} in {escaped}");
        }
        assert!(escaped.contains("&#96;b&#96;"), "{escaped}");
    }

    #[test]
    fn a_fence_outlasts_every_backtick_run_inside_it() {
        let block = fenced("diff", "+ a ```` b\n");
        assert!(block.starts_with("`````diff\n"), "{block}");
        assert!(block.ends_with("\n`````\n"), "{block}");
        assert!(fenced("", "plain").starts_with("```\n"));
    }
}
