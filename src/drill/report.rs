//! Human renderings of a drill report: Markdown (for a ticket or a chat)
//! and a self-contained HTML page (no scripts, no external files) with the
//! check table and the RTO history of the source's drills as an SVG chart.

use std::fmt::Write;

use super::{CheckStatus, DrillReport};

pub use crate::progress::human_bytes;

/// `0.4s`, `12.3s`, `4m 05s`, `2h 03m`, `3d 04h`.
pub fn human_seconds(s: f64) -> String {
    if s < 60.0 {
        return format!("{s:.1}s");
    }
    let s = s.round() as u64;
    match s {
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn status_word(s: CheckStatus) -> &'static str {
    match s {
        CheckStatus::Passed => "ok",
        CheckStatus::Failed => "FAILED",
        CheckStatus::Skipped => "skipped",
    }
}

fn opt_seconds(s: Option<f64>) -> String {
    s.map(human_seconds).unwrap_or_else(|| "-".into())
}

/// The one-line verdict: the first line of the CLI's output.
pub fn verdict(r: &DrillReport) -> String {
    match &r.first_failure {
        None => format!(
            "drill PASSED: {} checks on backup {} of {}; RTO {}, RPO {}",
            r.checks.len(),
            r.backup,
            r.source,
            opt_seconds(r.rto_seconds),
            opt_seconds(r.rpo_seconds)
        ),
        Some(first) => format!("drill FAILED: {first}"),
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The report as Markdown.
pub fn markdown(r: &DrillReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Restore drill {}: {}\n",
        r.id,
        if r.passed { "PASSED" } else { "FAILED" }
    );
    if let Some(first) = &r.first_failure {
        let _ = writeln!(out, "**First failure:** {}\n", md_cell(first));
    }
    let rows = [
        ("Policy / source", format!("{} / {}", r.policy, r.source)),
        (
            "Backup",
            format!(
                "{} ({}, started {})",
                r.backup,
                r.backup_kind,
                r.backup_started_at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        ),
        ("Restored into", r.target.clone()),
        (
            "Drill ran",
            format!(
                "{} to {} on {} (lifeboat {})",
                r.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                r.finished_at.format("%H:%M:%S UTC"),
                r.host,
                r.lifeboat_version
            ),
        ),
        (
            "RTO (start to usable restored target)",
            opt_seconds(r.rto_seconds),
        ),
        (
            "RPO (age of the restored data)",
            match r.restored_point {
                Some(p) => format!(
                    "{} (data as of {})",
                    opt_seconds(r.rpo_seconds),
                    p.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                None => "-".into(),
            },
        ),
        ("Read from the repository", human_bytes(r.bytes_read)),
    ];
    out.push_str("| | |\n|---|---|\n");
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {} |", md_cell(&v));
    }
    out.push_str("\n## Checks\n\n| Check | Result | Detail |\n|---|---|---|\n");
    for c in &r.checks {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            md_cell(&c.name),
            status_word(c.status),
            md_cell(&c.detail)
        );
    }
    if !r.leftovers_removed.is_empty() {
        out.push_str("\n## Leftovers of earlier drills\n\n");
        for l in &r.leftovers_removed {
            let _ = writeln!(
                out,
                "- {} (drill {}): {}",
                l.path.display(),
                l.drill.as_deref().unwrap_or("?"),
                l.outcome
            );
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report as one HTML page; `history` holds the source's earlier
/// drills (this one is added if missing) for the RTO chart.
pub fn html(r: &DrillReport, history: &[DrillReport]) -> String {
    let mut points: Vec<(&str, f64, bool)> = history
        .iter()
        .filter(|h| h.id != r.id)
        .filter_map(|h| Some((h.id.as_str(), h.rto_seconds?, h.passed)))
        .collect();
    if let Some(rto) = r.rto_seconds {
        points.push((r.id.as_str(), rto, r.passed));
    }
    points.sort_by(|a, b| a.0.cmp(b.0));
    let keep = points.len().saturating_sub(24);
    let points = &points[keep..];

    let mut out = String::new();
    let verdict_class = if r.passed { "pass" } else { "fail" };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>lifeboat drill {id} {src}: {word}</title>\n<style>\
body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}}\
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}\
.pass{{color:#11772f}}.fail{{color:#b00020;font-weight:bold}}.skipped{{color:#777}}\
</style></head><body>\n<h1>Restore drill {id}: <span class=\"{cls}\">{word}</span></h1>\n",
        id = esc(&r.id),
        src = esc(&r.source),
        word = if r.passed { "PASSED" } else { "FAILED" },
        cls = verdict_class
    );
    if let Some(first) = &r.first_failure {
        let _ = writeln!(out, "<p class=\"fail\">First failure: {}</p>", esc(first));
    }
    out.push_str("<table>\n");
    for (k, v) in [
        ("Policy / source", format!("{} / {}", r.policy, r.source)),
        (
            "Backup",
            format!(
                "{} ({}, started {})",
                r.backup,
                r.backup_kind,
                r.backup_started_at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        ),
        ("Restored into", r.target.clone()),
        (
            "Drill ran",
            format!(
                "{} on {}",
                r.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                r.host
            ),
        ),
        ("RTO", opt_seconds(r.rto_seconds)),
        ("RPO", opt_seconds(r.rpo_seconds)),
        ("Read", human_bytes(r.bytes_read)),
    ] {
        let _ = writeln!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    out.push_str("</table>\n<h2>Checks</h2>\n<table>\n<tr><th>Check</th><th>Result</th><th>Detail</th></tr>\n");
    for c in &r.checks {
        let cls = match c.status {
            CheckStatus::Passed => "pass",
            CheckStatus::Failed => "fail",
            CheckStatus::Skipped => "skipped",
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"{cls}\">{}</td><td>{}</td></tr>",
            esc(&c.name),
            status_word(c.status),
            esc(&c.detail)
        );
    }
    out.push_str("</table>\n<h2>Recovery time of this source's drills</h2>\n");
    out.push_str(&rto_chart(points));
    out.push_str("</body></html>\n");
    out
}

/// An SVG bar chart of RTO per drill (red bars: failed drills).
fn rto_chart(points: &[(&str, f64, bool)]) -> String {
    if points.is_empty() {
        return "<p>No drill restored anything yet.</p>\n".into();
    }
    let (w, h, left, bottom) = (640.0_f64, 220.0_f64, 60.0_f64, 40.0_f64);
    let max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max).max(1.0);
    let slot = (w - left) / points.len() as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"RTO per drill\">\
<line x1=\"{left}\" y1=\"{y0}\" x2=\"{w}\" y2=\"{y0}\" stroke=\"#444\"/>\
<text x=\"4\" y=\"14\" font-size=\"11\">{top}</text><text x=\"4\" y=\"{y0}\" font-size=\"11\">0s</text>",
        y0 = h - bottom,
        top = esc(&human_seconds(max))
    );
    for (i, (id, rto, passed)) in points.iter().enumerate() {
        let bar = (h - bottom - 10.0) * rto / max;
        let x = left + i as f64 * slot + slot * 0.15;
        let y = h - bottom - bar;
        let color = if *passed { "#3b7dd8" } else { "#b00020" };
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{bar:.1}\" fill=\"{color}\"><title>{t}: {s}</title></rect>",
            bw = slot * 0.7,
            t = esc(id),
            s = esc(&human_seconds(*rto))
        );
        // Date under every bar that fits (ids start with YYYYMMDD).
        if points.len() <= 12 || i % 2 == 0 {
            let _ = write!(
                svg,
                "<text x=\"{x:.1}\" y=\"{ty}\" font-size=\"10\">{d}</text>",
                ty = h - bottom + 14.0,
                d = esc(id.get(4..8).unwrap_or(id))
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::{Check, REPORT_FORMAT};

    fn report(id: &str, rto: Option<f64>, failed: Option<&str>) -> DrillReport {
        let at = "2026-11-24T03:00:00Z".parse().unwrap();
        DrillReport {
            format: REPORT_FORMAT,
            id: id.into(),
            policy: "app".into(),
            source: "main-db".into(),
            host: "h".into(),
            lifeboat_version: "0.1.0".into(),
            started_at: at,
            finished_at: at,
            backup: "20261124T021500Z-0001".into(),
            backup_kind: "postgres-dump".into(),
            backup_started_at: at,
            target: "throwaway PostgreSQL 15 on 127.0.0.1:5 (/tmp/x)".into(),
            passed: failed.is_none(),
            first_failure: failed.map(|f| format!("check: orders: {f}")),
            rto_seconds: rto,
            rpo_seconds: Some(2700.0),
            restored_point: Some(at),
            bytes_read: 1 << 20,
            checks: vec![Check {
                name: "check: orders | today".into(),
                status: if failed.is_some() {
                    CheckStatus::Failed
                } else {
                    CheckStatus::Passed
                },
                detail: failed.unwrap_or("5 (expected > 0)").into(),
            }],
            leftovers_removed: vec![],
        }
    }

    #[test]
    fn durations_read_like_a_person_writes_them() {
        assert_eq!(human_seconds(0.42), "0.4s");
        assert_eq!(human_seconds(245.0), "4m 05s");
        assert_eq!(human_seconds(7380.0), "2h 03m");
        assert_eq!(human_seconds(3.0 * 86400.0 + 4.0 * 3600.0), "3d 04h");
    }

    #[test]
    fn markdown_has_the_verdict_and_escapes_table_cells() {
        let r = report(
            "20261124T030000Z-aaaa",
            Some(12.5),
            Some("got 0, expected > 0"),
        );
        let md = markdown(&r);
        assert!(
            md.starts_with("# Restore drill 20261124T030000Z-aaaa: FAILED"),
            "{md}"
        );
        assert!(
            md.contains("| check: orders \\| today | FAILED | got 0, expected > 0 |"),
            "{md}"
        );
        assert!(
            md.contains("| RTO (start to usable restored target) | 12.5s |"),
            "{md}"
        );
        assert_eq!(
            verdict(&r),
            "drill FAILED: check: orders: got 0, expected > 0"
        );
    }

    #[test]
    fn html_is_self_contained_with_one_bar_per_drill_that_restored() {
        let history = vec![
            report("20261001T030000Z-aaaa", Some(10.0), None),
            report("20261101T030000Z-bbbb", None, Some("scratch")),
            report("20261124T030000Z-cccc", Some(20.0), None),
        ];
        let page = html(&history[2], &history);
        assert_eq!(page.matches("<rect").count(), 2, "{page}");
        assert!(!page.contains("<script"), "no scripts");
        assert!(
            !page.contains("src=") && !page.contains("href="),
            "no external resources"
        );
        assert!(page.contains("check: orders | today"));
        let escaped = html(&report("x<y", Some(1.0), Some("<b>")), &[]);
        assert!(escaped.contains("x&lt;y") && !escaped.contains("<b>"));
    }
}
