//! The report's charts, drawn by plotters' SVG backend into strings that
//! the page inlines. Time charts bin the minutes so that a chart never has
//! more than [`MAX_BINS`] bars or points, whatever the run's length (a
//! 33-hour run is bins of 9 minutes; the JSON keeps every minute).
//!
//! Not for: computing figures (`report::figures` does); legends and
//! captions are HTML, beside each chart, so they never cover the data.

use plotters::prelude::*;

use super::hist::LatencyHistogram;
use super::{index, Figures, Minute};
use crate::model::Outcome;

/// At most this many bins on a time axis.
pub const MAX_BINS: i64 = 240;
const W: u32 = 1160;
const H: u32 = 300;
const FONT: &str = "sans-serif";

/// The colour of each outcome, in the order of `Outcome::ALL` (the page's
/// legends use the same).
pub const OUTCOME_COLOURS: [(u8, u8, u8); 7] = [
    (46, 125, 50),   // accepted
    (239, 108, 0),   // invalid
    (120, 144, 156), // duplicate
    (198, 40, 40),   // rejected
    (106, 27, 154),  // failed
    (156, 204, 101), // skipped
    (0, 131, 143),   // validated
];
pub const CONFIGURED: RGBColor = RGBColor(198, 40, 40);
pub const ACHIEVED: RGBColor = RGBColor(21, 101, 192);
pub const P50: RGBColor = RGBColor(46, 125, 50);
pub const P95: RGBColor = RGBColor(239, 108, 0);
pub const P99: RGBColor = RGBColor(198, 40, 40);
const PAUSE: RGBColor = RGBColor(255, 193, 7);

pub fn hex((r, g, b): (u8, u8, u8)) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

fn colour(o: Outcome) -> RGBColor {
    let (r, g, b) = OUTCOME_COLOURS[index(o)];
    RGBColor(r, g, b)
}

type Res = Result<(), Box<dyn std::error::Error>>;

/// The time axis: the minutes from the first to the last, in bins.
pub struct TimeAxis {
    pub first: i64,
    /// Minutes per bin.
    pub bin: i64,
    pub bins: usize,
    /// Labels with the date (the span crosses midnight).
    long: bool,
}

impl TimeAxis {
    pub fn of(minutes: &[Minute]) -> Option<TimeAxis> {
        let first = minutes.first()?.unix_minute;
        let last = minutes.last()?.unix_minute;
        let span = last - first + 1;
        let bin = (span + MAX_BINS - 1) / MAX_BINS;
        let bins = ((span + bin - 1) / bin) as usize;
        Some(TimeAxis {
            first,
            bin,
            bins,
            long: first / 1440 != last / 1440,
        })
    }

    fn bin_of(&self, minute: i64) -> usize {
        (((minute - self.first) / self.bin) as usize).min(self.bins - 1)
    }

    fn x_of_ms(&self, ms: i64) -> f64 {
        (ms as f64 / 60_000.0 - self.first as f64) / self.bin as f64
    }

    /// `12:00` (or `11-26 12:00`) at the start of x (in bins).
    fn label(&self, x: f64) -> String {
        let m = self.first + (x * self.bin as f64).round() as i64;
        let s = super::format_minute(m);
        if self.long {
            s.get(5..16).unwrap_or("").replace('T', " ")
        } else {
            s.get(11..16).unwrap_or("").to_string()
        }
    }

    /// What one bin is, in words.
    pub fn unit(&self) -> String {
        if self.bin == 1 {
            "per minute".into()
        } else {
            format!("per {} minutes", self.bin)
        }
    }
}

fn finish(buf: String) -> String {
    // Inline SVG in HTML needs no namespace; without it the page holds no
    // address at all.
    buf.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn int_label(v: &f64) -> String {
    if v.fract().abs() > 1e-9 && *v < 10.0 {
        format!("{v:.1}")
    } else {
        crate::output::progress::thousands(v.round().max(0.0) as u64)
    }
}

/// Outcomes per bin, stacked bars.
pub fn outcomes(f: &Figures, axis: &TimeAxis) -> Result<String, Box<dyn std::error::Error>> {
    let mut bins = vec![[0u64; 7]; axis.bins];
    for m in &f.per_minute {
        let b = axis.bin_of(m.unix_minute);
        for (i, c) in m.counts.0.iter().enumerate() {
            bins[b][i] += c;
        }
    }
    let top = bins
        .iter()
        .map(|b| b.iter().sum::<u64>())
        .max()
        .unwrap_or(0) as f64;
    let mut buf = String::new();
    draw(&mut buf, |root| {
        let mut chart = time_chart(&root, f, axis, nice_max(top), "records")?;
        for (b, counts) in bins.iter().enumerate() {
            let mut base = 0u64;
            let x0 = b as f64 + 0.08;
            let x1 = b as f64 + 0.92;
            let mut rects = Vec::new();
            for o in Outcome::ALL {
                let c = counts[index(o)];
                if c == 0 {
                    continue;
                }
                rects.push(Rectangle::new(
                    [(x0, base as f64), (x1, (base + c) as f64)],
                    colour(o).filled(),
                ));
                base += c;
            }
            chart.draw_series(rects)?;
        }
        Ok(())
    })?;
    Ok(finish(buf))
}

/// Requests per minute (bars) against the configured rate (a step line).
pub fn rate(f: &Figures, axis: &TimeAxis) -> Result<String, Box<dyn std::error::Error>> {
    let mut requests = vec![0u64; axis.bins];
    let mut configured: Vec<Option<f64>> = vec![None; axis.bins];
    for m in &f.per_minute {
        let b = axis.bin_of(m.unix_minute);
        requests[b] += m.requests;
        if m.configured_per_minute.is_some() {
            configured[b] = m.configured_per_minute;
        }
    }
    // The configured rate holds between the minutes that have rows.
    let mut last = None;
    for c in configured.iter_mut() {
        match c {
            Some(v) => last = Some(*v),
            None => *c = last,
        }
    }
    let per_min: Vec<f64> = requests
        .iter()
        .map(|r| *r as f64 / axis.bin as f64)
        .collect();
    let top = per_min
        .iter()
        .copied()
        .chain(configured.iter().flatten().copied())
        .fold(0.0, f64::max);
    let y_max = nice_max(top * 1.1);
    let mut buf = String::new();
    draw(&mut buf, |root| {
        let mut chart = time_chart(&root, f, axis, y_max, "requests per minute")?;
        chart.draw_series(per_min.iter().enumerate().filter(|(_, v)| **v > 0.0).map(
            |(b, v)| {
                Rectangle::new(
                    [(b as f64 + 0.08, 0.0), (b as f64 + 0.92, *v)],
                    ACHIEVED.mix(0.85).filled(),
                )
            },
        ))?;
        // The configured rate as a step line over the bins that have one.
        let mut run: Vec<(f64, f64)> = Vec::new();
        let mut runs = Vec::new();
        for (b, c) in configured.iter().enumerate() {
            match c {
                Some(v) => {
                    run.push((b as f64, *v));
                    run.push((b as f64 + 1.0, *v));
                }
                None if !run.is_empty() => runs.push(std::mem::take(&mut run)),
                None => {}
            }
        }
        if !run.is_empty() {
            runs.push(run);
        }
        for r in runs {
            chart.draw_series(LineSeries::new(r, CONFIGURED.stroke_width(3)))?;
        }
        Ok(())
    })?;
    Ok(finish(buf))
}

/// p50, p95 and p99 per bin (milliseconds), lines with points.
pub fn latency_over_time(
    f: &Figures,
    axis: &TimeAxis,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut bins: Vec<LatencyHistogram> = vec![LatencyHistogram::default(); axis.bins];
    for (m, h) in f.per_minute.iter().zip(&f.minute_histograms) {
        bins[axis.bin_of(m.unix_minute)].merge(h);
    }
    let series: Vec<[Option<u64>; 3]> = bins
        .iter()
        .map(|h| [h.quantile(0.5), h.quantile(0.95), h.quantile(0.99)])
        .collect();
    let top = series
        .iter()
        .flatten()
        .flatten()
        .copied()
        .max()
        .unwrap_or(0) as f64;
    let y_max = nice_max(top * 1.1);
    let mut buf = String::new();
    draw(&mut buf, |root| {
        let mut chart = time_chart(&root, f, axis, y_max, "milliseconds")?;
        for (k, c) in [P99, P95, P50].into_iter().enumerate() {
            let k = 2 - k;
            let pts: Vec<(f64, f64)> = series
                .iter()
                .enumerate()
                .filter_map(|(b, s)| s[k].map(|v| (b as f64 + 0.5, v as f64)))
                .collect();
            chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?;
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
        }
        Ok(())
    })?;
    Ok(finish(buf))
}

/// The latency distribution: rows per latency bin, 40 bins from 0 to the
/// 99.9th percentile or 3 × the 99th, whichever is lower (a few slow
/// minutes would squeeze the rest into a few bars); slower rows in the
/// last bin. Also where the last bin starts (ms).
pub fn latency_histogram(f: &Figures) -> Result<(String, u64), Box<dyn std::error::Error>> {
    const BINS: usize = 40;
    let h = &f.histogram;
    let p99 = h.quantile(0.99).unwrap_or(1).max(1);
    let upper = h.quantile(0.999).unwrap_or(1).clamp(1, 3 * p99) as f64;
    let width = nice_max(upper / BINS as f64).max(1.0);
    let mut counts = [0u64; BINS];
    for (lo, hi, c) in h.buckets() {
        let mid = (lo + hi) as f64 / 2.0;
        counts[((mid / width) as usize).min(BINS - 1)] += c;
    }
    let top = counts.iter().copied().max().unwrap_or(0) as f64;
    let x_max = width * BINS as f64;
    let mut buf = String::new();
    draw(&mut buf, |root| {
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .margin_right(36)
            .x_label_area_size(32)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, 0f64..nice_max(top))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .max_light_lines(1)
            .x_labels(10)
            .x_label_formatter(&|v| format!("{} ms", int_label(v)))
            .y_label_formatter(&int_label)
            .y_desc("sent records")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 14))
            .draw()?;
        chart.draw_series(
            counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| {
                    let x0 = i as f64 * width;
                    Rectangle::new(
                        [(x0 + width * 0.05, 0.0), (x0 + width * 0.95, *c as f64)],
                        ACHIEVED.mix(0.85).filled(),
                    )
                }),
        )?;
        Ok(())
    })?;
    Ok((finish(buf), (width * (BINS - 1) as f64) as u64))
}

/// Sent records by number of attempts.
pub fn attempts(f: &Figures) -> Result<String, Box<dyn std::error::Error>> {
    let sent: Vec<(u32, u64)> = f
        .attempts
        .iter()
        .filter(|(a, _)| **a > 0)
        .map(|(a, c)| (*a, *c))
        .collect();
    let max_a = sent.iter().map(|(a, _)| *a).max().unwrap_or(1).max(3);
    let top = sent.iter().map(|(_, c)| *c).max().unwrap_or(0) as f64;
    let mut buf = String::new();
    draw(&mut buf, |root| {
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .margin_right(36)
            .x_label_area_size(32)
            .y_label_area_size(70)
            .build_cartesian_2d(0.5f64..max_a as f64 + 0.5, 0f64..nice_max(top * 1.12))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .max_light_lines(1)
            .x_labels(max_a as usize + 1)
            .x_label_formatter(&|v| {
                if (v - v.round()).abs() < 1e-6 && *v >= 1.0 {
                    format!("{}", v.round() as u64)
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&int_label)
            .x_desc("attempts")
            .y_desc("sent records")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 14))
            .draw()?;
        chart.draw_series(sent.iter().map(|(a, c)| {
            let x = *a as f64;
            Rectangle::new(
                [(x - 0.35, 0.0), (x + 0.35, *c as f64)],
                ACHIEVED.mix(0.85).filled(),
            )
        }))?;
        // The count above each bar: 2,000 retried records beside 200,000
        // are a bar too thin to see.
        let style =
            TextStyle::from((FONT, 13).into_font()).pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Bottom,
            ));
        chart.draw_series(sent.iter().map(|(a, c)| {
            Text::new(
                crate::output::progress::thousands(*c),
                (*a as f64, *c as f64 + top * 0.02),
                style.clone(),
            )
        }))?;
        Ok(())
    })?;
    Ok(finish(buf))
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A chart over the time axis (the same frame for every time chart): its
/// mesh with the minute labels, and the breaker's pauses shaded.
fn time_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    f: &Figures,
    axis: &TimeAxis,
    y_max: f64,
    y_label: &str,
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(root)
        .margin(12)
        .margin_right(36)
        .x_label_area_size(32)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..axis.bins as f64, 0f64..y_max)?;
    mesh(&mut chart, axis, y_label)?;
    pause_bands(&mut chart, f, axis, y_max)?;
    Ok(chart)
}

fn mesh(chart: &mut Chart<'_, '_>, axis: &TimeAxis, y: &str) -> Res {
    chart
        .configure_mesh()
        .disable_x_mesh()
        .max_light_lines(1)
        .x_labels(axis.bins.min(12) + 1)
        // Labels at bin starts only: a label between two would repeat one.
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-6 {
                axis.label(*x)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&int_label)
        .y_desc(y)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 14))
        .draw()?;
    Ok(())
}

/// The breaker's pauses, as shaded bands behind the data.
fn pause_bands(chart: &mut Chart<'_, '_>, f: &Figures, axis: &TimeAxis, y_max: f64) -> Res {
    let end = axis.bins as f64;
    chart.draw_series(f.pauses.iter().filter_map(|p| {
        let x0 = axis.x_of_ms(p.start_ms).clamp(0.0, end);
        let x1 = axis
            .x_of_ms(p.end_ms.unwrap_or(p.start_ms + 60_000))
            .clamp(0.0, end);
        // At least a sliver, so a short pause is seen.
        let x1 = x1.max(x0 + 0.15).min(end);
        (x1 > x0).then(|| Rectangle::new([(x0, 0.0), (x1, y_max)], PAUSE.mix(0.45).filled()))
    }))?;
    Ok(())
}

fn draw(
    buf: &mut String,
    f: impl FnOnce(DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Res,
) -> Res {
    let root = SVGBackend::with_string(buf, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    f(root.clone())?;
    root.present()?;
    Ok(())
}
