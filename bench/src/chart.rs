//! One log-log SVG per figure against N, so a reader sees at a glance whether a cost is flat,
//! linear or worse: medians with min–max bars, peers as extra series, and a grey ∝ N reference.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::report::{Figure, PeerFigure};

const OURS: RGBColor = RGBColor(0x1f, 0x5f, 0xa8);
const PEER: RGBColor = RGBColor(0xc4, 0x4e, 0x1b);
const OURS_CLI: RGBColor = RGBColor(0x2e, 0x8b, 0x57);
const REFERENCE: RGBColor = RGBColor(0xb0, 0xb0, 0xb0);

/// A series to draw: label, colour, and (N, min, median, max) points.
struct Series {
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64, f64, f64)>,
}

/// Writes `<dir>/<figure.id>.svg`.
pub fn draw(dir: &Path, figure: &Figure, peers: &[&PeerFigure]) -> Result<()> {
    let mut series = vec![Series {
        label: "Keelson".into(),
        color: OURS,
        points: figure.points.iter().map(|p| (p.n as f64, p.summary.min, p.summary.median, p.summary.max)).collect(),
    }];
    for peer in peers {
        if peer.ours_is_separate_series {
            series.push(Series {
                label: peer.ours_label.to_owned(),
                color: OURS_CLI,
                points: peer.points.iter().map(|p| (p.n as f64, p.ours.min, p.ours.median, p.ours.max)).collect(),
            });
        }
        series.push(Series {
            label: peer.theirs_label.clone(),
            color: PEER,
            points: peer.points.iter().map(|p| (p.n as f64, p.theirs.min, p.theirs.median, p.theirs.max)).collect(),
        });
    }
    series.retain(|s| !s.points.is_empty());
    let Some(first) = series.first().and_then(|s| s.points.first()).copied() else {
        return Ok(());
    };

    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x_lo, x_hi) = bounds(xs).unwrap_or((first.0, first.0));
    let (x_lo, x_hi) = (x_lo / 1.6, x_hi * 1.6);
    let ys = series.iter().flat_map(|s| s.points.iter().flat_map(|p| [p.1, p.3])).filter(|v| *v > 0.0);
    let (y_lo, y_hi) = bounds(ys).unwrap_or((first.2, first.2));
    // At least as many decades on y as on x, so a linear cost climbs at 45° and a flat one looks flat.
    let x_decades = (x_hi / x_lo).log10();
    let centre = (y_lo.log10() + y_hi.log10()) / 2.0;
    let half = ((y_hi / y_lo).log10() / 2.0 + 0.3).max(x_decades / 2.0);
    // The top third stays empty for the legend.
    let (y_lo, y_hi) = (10f64.powf(centre - half), 10f64.powf(centre + half + half));

    let path = dir.join(format!("{}.svg", figure.id));
    let root = SVGBackend::new(&path, (720, 480)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let caption = format!("{} ({})", figure.title, figure.unit);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo..y_hi).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("apps in the repository (N)")
        .y_desc(figure.unit)
        .x_label_formatter(&one_two_five)
        .y_label_formatter(&one_two_five)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| err(&e))?;

    // Linear total cost through the first median: ∝ N for costs, a constant for rates.
    let rate = figure.unit.ends_with("/s");
    let at = |x: f64| if rate { first.2 } else { first.2 * x / first.0 };
    let reference = [(x_lo, at(x_lo)), (x_hi, at(x_hi))];
    chart
        .draw_series(LineSeries::new(reference, REFERENCE.stroke_width(1)))
        .map_err(|e| err(&e))?
        .label(if rate { "flat: per-item cost independent of N" } else { "∝ N (linear)" })
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], REFERENCE.stroke_width(1)));

    for s in &series {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(s.points.iter().map(|p| (p.0, p.2)), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(s.points.iter().map(|p| Circle::new((p.0, p.2), 4, color.filled()))).map_err(|e| err(&e))?;
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(|p| PathElement::new([(p.0, p.1.max(y_lo)), (p.0, p.3.max(y_lo))], color.stroke_width(1))),
            )
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Tick labels only at 1, 2 and 5 times a power of ten; the other grid lines stay unlabelled.
fn one_two_five(v: &f64) -> String {
    if *v <= 0.0 {
        return String::new();
    }
    let mantissa = *v / 10f64.powf(v.log10().floor());
    if [1.0, 2.0, 5.0, 10.0].iter().any(|m| (mantissa - m).abs() < 1e-6) {
        crate::report::num(*v)
    } else {
        String::new()
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}
