//! The SVG plot: answers per millisecond around one restart, coloured by
//! the generation that answered, one panel per system.

use std::path::Path;

use plotters::prelude::*;
use shellflip_bench::stats::histogram;

/// What one panel shows.
pub struct Panel {
    /// The system's name.
    pub title: String,
    /// Which restart is shown (1-based) and out of how many.
    pub restart: usize,
    pub restarts: usize,
    /// Milliseconds relative to the trigger shown on the x axis.
    pub from_ms: i64,
    pub to_ms: i64,
    /// Greeting times relative to the trigger (µs, may be negative) per
    /// generation, sorted.
    pub answers: Vec<(u64, Vec<i64>)>,
    /// Vertical markers: label and time relative to the trigger (ms).
    pub markers: Vec<(String, f64)>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];
const MARKER_COLORS: [RGBColor; 4] = [
    RGBColor(0, 0, 0),
    RGBColor(120, 120, 120),
    RGBColor(214, 39, 40),
    RGBColor(227, 119, 194),
];

/// Counts per millisecond bucket of `[from_ms, to_ms)`.
fn per_ms(times_us: &[i64], from_ms: i64, to_ms: i64) -> Vec<u32> {
    // Shift to non-negative microseconds for the histogram.
    let shift = -from_ms * 1000;
    let shifted: Vec<u64> = times_us
        .iter()
        .filter_map(|t| u64::try_from(t + shift).ok())
        .collect();
    histogram(&shifted, 0, 1000, (to_ms - from_ms).max(0) as usize)
}

/// Draws the panels into an SVG file at `path`.
pub fn draw(path: &Path, panels: &[Panel]) -> Result<(), Box<dyn std::error::Error>> {
    let height = 300 * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    for (panel, area) in panels.iter().zip(areas) {
        let series: Vec<(u64, Vec<u32>)> = panel
            .answers
            .iter()
            .map(|(g, t)| (*g, per_ms(t, panel.from_ms, panel.to_ms)))
            .filter(|(_, c)| c.iter().any(|n| *n > 0))
            .collect();
        let y_max = series
            .iter()
            .flat_map(|(_, c)| c.iter().copied())
            .max()
            .unwrap_or(1)
            .max(1) as f64
            * 1.9; // room for the legend above the data
        let mut chart = ChartBuilder::on(&area)
            .caption(
                format!(
                    "{} — restart {} of {} (answers per ms by generation; 0 = trigger)",
                    panel.title, panel.restart, panel.restarts
                ),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(45)
            .build_cartesian_2d(panel.from_ms as f64..panel.to_ms as f64, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("ms since the trigger")
            .y_desc("answers / ms")
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (g, counts) in &series {
            let color = COLORS[(*g as usize) % COLORS.len()];
            // Only the span in which this generation answered.
            let first = counts.iter().position(|n| *n > 0).unwrap_or(0);
            let last = counts.iter().rposition(|n| *n > 0).unwrap_or(0);
            let points = (first..=last).flat_map(|i| {
                let x = panel.from_ms as f64 + i as f64;
                let y = counts[i] as f64;
                [(x, y), (x + 1.0, y)]
            });
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(1)))?
                .label(format!("generation {g}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
                });
        }
        for (i, (label, at)) in panel.markers.iter().enumerate() {
            let color = MARKER_COLORS[i % MARKER_COLORS.len()];
            let shown = (panel.from_ms as f64..=panel.to_ms as f64).contains(at);
            let x = if shown { *at } else { panel.to_ms as f64 };
            let label = if shown {
                format!("{label} ({at:.1} ms)")
            } else {
                format!("{label} ({at:.1} ms, off the chart)")
            };
            chart
                .draw_series(DashedLineSeries::new(
                    [(x, 0.0), (x, if shown { y_max } else { 0.0 })],
                    4,
                    3,
                    color.stroke_width(1),
                ))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(1))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 12))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_times_relative_to_the_window() {
        // -1.5 ms, -0.2 ms, 0.1 ms, 0.9 ms, 2.5 ms in a [-2, 2) ms window.
        let t = [-1500, -200, 100, 900, 2500];
        assert_eq!(per_ms(&t, -2, 2), vec![1, 1, 2, 0]);
    }
}
