//! The report page: one self-contained HTML document through maud (every
//! value escaped), inline CSS, the charts as inline SVG. No script, no
//! font, image or style sheet from anywhere: it opens offline, from a mail
//! attachment or a ticket.
//!
//! Not for: the figures (`report::figures`) or drawing (`report::charts`).

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::charts::{self, hex, TimeAxis, OUTCOME_COLOURS};
use super::{index, Counts, Figures, TABLE_CAP};
use crate::model::Outcome;
use crate::output::progress::thousands;

const CSS: &str = "
body{font-family:sans-serif;margin:24px auto;max-width:1200px;color:#222;background:#fafafa;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ccc;padding-bottom:4px}
p.meta,p.note{color:#555;font-size:13px;margin:4px 0}
table{border-collapse:collapse;font-size:13px;background:#fff;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eee}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.msg{max-width:520px;overflow-wrap:anywhere}td.t{white-space:nowrap}
figure{margin:8px 0 16px;background:#fff;border:1px solid #ddd;padding:8px}
figcaption{font-size:14px;margin:0 0 4px;font-weight:bold}
figure svg{display:block;width:100%;height:auto}
.legend{font-size:13px;margin:4px 0 0}.legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px;border:1px solid #0003}
.line{display:inline-block;width:18px;height:0;border-top:3px solid;margin-right:4px;vertical-align:3px}
code.field{background:#fde8e8;padding:0 4px;border-radius:3px;margin-right:4px}
.empty{color:#777;font-style:italic}
";

/// The whole page.
pub fn page(f: &Figures) -> Result<String, Box<dyn std::error::Error>> {
    let axis = TimeAxis::of(&f.per_minute);
    let sent = f.histogram.count() > 0;
    let (outcomes, rate, latency) = match &axis {
        Some(a) => (
            Some(charts::outcomes(f, a)?),
            Some(charts::rate(f, a)?),
            if sent {
                Some(charts::latency_over_time(f, a)?)
            } else {
                None
            },
        ),
        None => (None, None, None),
    };
    let (distribution, last_bin) = if sent {
        let (svg, from) = charts::latency_histogram(f)?;
        (Some(svg), from)
    } else {
        (None, 0)
    };
    let attempts = if sent {
        Some(charts::attempts(f)?)
    } else {
        None
    };
    let unit = axis.as_ref().map(|a| a.unit()).unwrap_or_default();
    let several = f.files.len() > 1;
    let title = match f.files.first() {
        Some(x) => format!("kycshare report: {}", x.results),
        None => "kycshare report".into(),
    };

    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { "kycshare report" }
                p.meta { "Generated " (f.generated_at) " from " (f.files.len()) " results file" @if several { "s (the run first, then its retry runs)" } ". It holds identityReferences, no email, mobile number, token or secret." }

                h2 { "Counts" }
                table #counts {
                    tr {
                        th { "results file" } th { "rows" }
                        @for o in Outcome::ALL { th { (o.as_str()) } }
                        th { "first completed" } th { "last completed" } th { "configured rate" } th { "exit" }
                    }
                    @for (i, file) in f.files.iter().enumerate() {
                        tr data-file=(i) {
                            td { (file.results) }
                            td.n { (thousands(file.rows)) }
                            (count_cells(&file.counts))
                            td.t { (file.first_completed_at.as_deref().unwrap_or("")) }
                            td.t { (file.last_completed_at.as_deref().unwrap_or("")) }
                            td { (file.configured.iter().map(|c| c.rate.as_str()).collect::<Vec<_>>().join(", ")) }
                            td.n { (file.exit_code.map(|c| c.to_string()).unwrap_or_default()) }
                        }
                    }
                    @if several {
                        tr #final-state {
                            th { "final state" }
                            td.n { (thousands(f.final_counts.total())) }
                            (count_cells(&f.final_counts))
                            td colspan="4" { "each identityReference's last outcome, in the order the files were given" }
                        }
                    }
                }
                p.note {
                    "Latency of the last attempt of each sent record: "
                    @match (f.latency_ms.p50, f.latency_ms.p95, f.latency_ms.p99, f.latency_ms.max) {
                        (Some(a), Some(b), Some(c), Some(m)) => {
                            "p50 " (a) " ms, p95 " (b) " ms, p99 " (c) " ms, max " (m) " ms"
                            @if let Some(mean) = f.latency_ms.mean { ", mean " (mean) " ms" }
                            " over " (thousands(f.latency_ms.count)) " records."
                        }
                        _ => { "no record was sent." }
                    }
                }

                h2 { "Over time" }
                (figure("chart-outcomes", &format!("Outcomes {unit} (by completedAt, UTC)"), outcomes.as_deref(),
                    html! { @for o in Outcome::ALL { @if f.counts.get(o) > 0 {
                        span { i.sw style=(format!("background:{}", hex(OUTCOME_COLOURS[index(o)]))) {} (o.as_str()) }
                    } } (pause_key(f)) }))
                (figure("chart-rate", &format!("Achieved rate against the configured rate (requests per minute{})", if unit == "per minute" { String::new() } else { format!(", averaged {unit}") }), rate.as_deref(),
                    html! {
                        span { i.sw style=(format!("background:{}", hex(rgb(charts::ACHIEVED)))) {} "requests sent (the attempts of the records completed in the minute)" }
                        @if f.per_minute.iter().any(|m| m.configured_per_minute.is_some()) {
                            span { i.line style=(format!("border-color:{}", hex(rgb(charts::CONFIGURED)))) {} "configured rate" }
                        } @else {
                            span { "configured rate unknown (no events file beside the results)" }
                        }
                        (pause_key(f))
                    }))
                (figure("chart-latency", &format!("Latency percentiles {unit} (ms)"), latency.as_deref(),
                    html! {
                        span { i.line style=(format!("border-color:{}", hex(rgb(charts::P50)))) {} "p50" }
                        span { i.line style=(format!("border-color:{}", hex(rgb(charts::P95)))) {} "p95" }
                        span { i.line style=(format!("border-color:{}", hex(rgb(charts::P99)))) {} "p99" }
                        (pause_key(f))
                    }))

                h2 { "Distributions" }
                (figure("chart-latency-distribution", "Latency distribution (the last attempt of each sent record)", distribution.as_deref(),
                    html! { @if sent && f.histogram.max() >= last_bin { span { "The last bar holds every record from " (thousands(last_bin)) " ms up (the slowest: " (thousands(f.histogram.max())) " ms)." } } }))
                (figure("chart-attempts", "Attempts per sent record", attempts.as_deref(),
                    html! { @if let Some(n) = f.attempts.get(&0) { span { (thousands(*n)) " records were not sent (attempts 0: invalid, duplicate, skipped)." } } }))

                h2 { "Pauses of the breaker" }
                @if f.pauses.is_empty() {
                    p.empty #pauses { "No pause: the API never looked down." }
                } @else {
                    p.note { "When attempts kept failing (connection errors, timeouts, 5xx, 429) with nothing succeeding, the run paused sending and probed Banxa until it answered. Shaded on the time charts." }
                    table #pauses {
                        tr { th { "results file" } th { "paused at" } th { "resumed at" } th { "seconds" } th { "message" } }
                        @for p in &f.pauses {
                            tr {
                                td { (p.results) } td.t { (p.start) }
                                td.t {
                                    @match (&p.end, p.run_ended) {
                                        (Some(end), false) => (end),
                                        (Some(end), true) => { "not resumed: the run ended at " (end) }
                                        (None, _) => "not resumed (the run was killed, or is still paused)",
                                    }
                                }
                                td.n { (p.seconds.map(|s| format!("{s:.1}")).unwrap_or_default()) }
                                td.msg { (p.message) }
                            }
                        }
                    }
                }

                h2 { "Top reasons" }
                @if f.reasons.is_empty() {
                    p.empty #reasons { "Every record was accepted." }
                } @else {
                    table #reasons {
                        tr { th { "records" } th { "outcome" } th { "HTTP" } th { "message" } th { "422 fields" } }
                        @for r in &f.reasons {
                            tr {
                                td.n { (thousands(r.count)) }
                                td { (r.outcome.as_str()) }
                                td { (r.http_status.map(|s| s.to_string()).unwrap_or_default()) }
                                td.msg { (r.message) }
                                td { @for (name, n) in &r.fields { code.field { (name) } "×" (thousands(*n)) " " } }
                            }
                        }
                    }
                    @if f.other_reasons > 0 {
                        p.note { (thousands(f.other_reasons)) " more records had other reasons." }
                    }
                }
                @if !f.fields.is_empty() {
                    p.note #fields { "Fields Banxa refused (422), all reasons together: "
                        @for (name, n) in &f.fields { code.field { (name) } (thousands(*n)) "  " } }
                }

                h2 { "Records not accepted" }
                p.note {
                    @if several { "Final state: a record failed in a run and accepted in a retry run is not listed. " }
                    (thousands(f.not_accepted.total)) " records not accepted"
                    @if f.not_accepted.left_out > 0 {
                        "; the first " (thousands(f.not_accepted.shown)) " are shown (at most " (TABLE_CAP) "), "
                        strong { (thousands(f.not_accepted.left_out)) " left out" }
                        ": the results files hold every one (filter the outcome column, e.g. "
                        code { "grep -v ',accepted,' RESULTS" } ")"
                    }
                    "."
                }
                @if !f.not_accepted.rows.is_empty() {
                    table #not-accepted {
                        tr { @if several { th { "file" } } th { "record" } th { "line" } th { "identityReference" } th { "outcome" } th { "HTTP" } th { "message" } }
                        @for r in &f.not_accepted.rows {
                            tr.row {
                                @if several { td.n { (r.file + 1) } }
                                td.n { (r.record) } td.n { (r.line) } td { (r.identity_reference) }
                                td { (r.outcome.as_str()) } td { (r.http_status) } td.msg { (r.message) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(markup.into_string())
}

fn rgb(c: plotters::style::RGBColor) -> (u8, u8, u8) {
    (c.0, c.1, c.2)
}

fn count_cells(c: &Counts) -> Markup {
    html! { @for o in Outcome::ALL { td.n { @if c.get(o) > 0 { (thousands(c.get(o))) } } } }
}

fn pause_key(f: &Figures) -> Markup {
    html! { @if !f.pauses.is_empty() { span { i.sw style="background:#ffc10773" {} "breaker paused" } } }
}

fn figure(id: &str, caption: &str, svg: Option<&str>, legend: Markup) -> Markup {
    html! {
        figure id=(id) {
            figcaption { (caption) }
            @match svg {
                Some(s) => (PreEscaped(s)),
                None => p.empty { "No data: no record was sent." },
            }
            div.legend { (legend) }
        }
    }
}
