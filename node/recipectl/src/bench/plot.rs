//! PNG plots: a run over time (throughput, latency, sheds; spikes shaded)
//! and the overload sweep (goodput and download p99 per offered load).
//! Text is drawn with DejaVu Sans from the `dejavu` crate, so no system
//! fonts are needed.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use super::report::RunReport;
use super::sweep::SweepReport;

type DrawResult = Result<(), Box<dyn std::error::Error>>;

const FONT: &str = "sans-serif";
const SPIKE: RGBColor = RGBColor(255, 170, 120);
const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

fn register_font() {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the bundled DejaVu Sans is a valid font"));
    });
}

fn finish(path: &Path, result: DrawResult) -> anyhow::Result<()> {
    result.map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))
}

/// Upper bound of an axis that fits `values` with some headroom.
pub fn axis_top(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.filter(|v| v.is_finite()).fold(0.0, f64::max);
    if max <= 0.0 { 1.0 } else { max * 1.15 }
}

/// Throughput, p50/p99 latency and sheds per second over a run.
pub fn run(path: &Path, report: &RunReport) -> anyhow::Result<()> {
    register_font();
    finish(path, draw_run(path, report))
}

fn draw_run(path: &Path, report: &RunReport) -> DrawResult {
    let root = BitMapBackend::new(path, (1200, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.titled(
        &format!(
            "{} against {}: {} clients, {} loop, deadline {} ms",
            report.name, report.target, report.clients, report.pacing, report.deadline_ms
        ),
        (FONT, 22),
    )?;
    let panels = body.split_evenly((3, 1));
    // The last bucket only holds stragglers completing after the run.
    let whole = report.seconds.ceil() as usize;
    let secs: Vec<_> = report.per_second.iter().filter(|s| s.t < whole).collect();
    let t_max = (secs.len().max(1)) as f64;
    let x = |t: usize| t as f64 + 0.5;

    type Series<'a> = (&'a str, Vec<(f64, f64)>);
    let panel = |area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
                 caption: &str,
                 y_desc: &str,
                 series: Vec<Series>|
     -> DrawResult {
        let top = axis_top(series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)));
        let mut chart = ChartBuilder::on(area)
            .caption(caption, (FONT, 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..t_max, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(y_desc)
            .label_style((FONT, 14))
            .draw()?;
        for s in &report.spikes {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(s.start, 0.0), ((s.start + s.length).min(t_max), top)],
                SPIKE.mix(0.25).filled(),
            )))?;
        }
        if !report.spikes.is_empty() {
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
                .label("spike")
                .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], SPIKE.filled()));
        }
        for (i, (name, points)) in series.into_iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    };

    let offered: Vec<(f64, f64)> = secs.iter().map(|s| (x(s.t), s.offered as f64)).collect();
    let good: Vec<(f64, f64)> = secs.iter().map(|s| (x(s.t), s.good as f64)).collect();
    panel(
        &panels[0],
        "Throughput",
        "requests/s",
        vec![("offered", offered), ("good (OK within deadline)", good)],
    )?;
    let p50: Vec<(f64, f64)> = secs.iter().map(|s| (x(s.t), s.p50_ms)).collect();
    let p99: Vec<(f64, f64)> = secs.iter().map(|s| (x(s.t), s.p99_ms)).collect();
    let dl99: Vec<(f64, f64)> = secs.iter().map(|s| (x(s.t), s.download_p99_ms)).collect();
    panel(
        &panels[1],
        "Latency of good requests (from scheduled send)",
        "ms",
        vec![("p50", p50), ("p99", p99), ("download p99", dl99)],
    )?;
    let shed: Vec<(f64, f64)> = secs.iter().map(|s| (x(s.t), s.shed as f64)).collect();
    let late: Vec<(f64, f64)> = secs
        .iter()
        .map(|s| (x(s.t), s.deadline_exceeded as f64))
        .collect();
    let errors: Vec<(f64, f64)> = secs.iter().map(|s| (x(s.t), s.errors as f64)).collect();
    panel(
        &panels[2],
        "Sheds and failures",
        "requests/s",
        vec![
            ("shed (RESOURCE_EXHAUSTED)", shed),
            ("deadline exceeded", late),
            ("other errors", errors),
        ],
    )?;
    root.present()?;
    Ok(())
}

/// Goodput and download p99 per offered load, one line per cluster.
pub fn sweep(path: &Path, report: &SweepReport) -> anyhow::Result<()> {
    register_font();
    finish(path, draw_sweep(path, report))
}

fn draw_sweep(path: &Path, report: &SweepReport) -> DrawResult {
    let root = BitMapBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.titled(
        &format!(
            "Overload sweep on the seed mix (capacity {:.0} req/s)",
            report.capacity
        ),
        (FONT, 22),
    )?;
    let panels = body.split_evenly((2, 1));
    let mut labels: Vec<&str> = Vec::new();
    for p in &report.points {
        if !labels.contains(&p.label.as_str()) {
            labels.push(&p.label);
        }
    }
    let x_max = axis_top(report.points.iter().map(|p| p.factor));
    let series = |label: &str, y: fn(&super::sweep::Point) -> f64| -> Vec<(f64, f64)> {
        report
            .points
            .iter()
            .filter(|p| p.label == label)
            .map(|p| (p.factor, y(p)))
            .collect()
    };

    // Goodput.
    let top = axis_top(
        report
            .points
            .iter()
            .map(|p| p.offered_per_sec.max(p.goodput_per_sec)),
    )
    .max(report.capacity * 1.15);
    let mut chart = ChartBuilder::on(&panels[0])
        .caption("Goodput (OK within deadline) per offered load", (FONT, 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("offered load / capacity")
        .y_desc("good requests/s")
        .label_style((FONT, 14))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, 0.0), (x_max, x_max * report.capacity)],
            BLACK.mix(0.3),
        ))?
        .label("offered")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.3)));
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, report.capacity), (x_max, report.capacity)],
            BLACK.mix(0.6),
        ))?
        .label("capacity")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.6)));
    for (i, label) in labels.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points = series(label, |p| p.goodput_per_sec);
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(*label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    // Download p99.
    let top = axis_top(report.points.iter().map(|p| p.download_p99_ms));
    let mut chart = ChartBuilder::on(&panels[1])
        .caption("Download p99 latency of good requests", (FONT, 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("offered load / capacity")
        .y_desc("ms")
        .label_style((FONT, 14))
        .draw()?;
    for (i, label) in labels.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points = series(label, |p| p.download_p99_ms);
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(*label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::report::Outcome;
    use super::super::report::Recorder;
    use super::super::workload::OpKind;
    use super::super::workload::Schedule;
    use super::*;

    #[test]
    fn axes_leave_headroom_and_never_collapse() {
        assert_eq!(axis_top([0.0, 0.0].into_iter()), 1.0);
        assert!((axis_top([10.0, 20.0, f64::NAN].into_iter()) - 23.0).abs() < 1e-9);
    }

    #[test]
    fn a_run_plot_is_a_png_with_text() {
        let mut r = Recorder::new(Duration::from_secs(1));
        for i in 0..3000u64 {
            let t = Duration::from_millis(i * 10);
            r.offered(t);
            let outcome = if i % 17 == 0 {
                Outcome::Shed
            } else {
                Outcome::Ok
            };
            r.record(
                OpKind::Download,
                t,
                t + Duration::from_millis(i % 7),
                outcome,
            );
        }
        let schedule = Schedule::seed(100.0, &[15.0, 25.0], 2.0, 3.0);
        let report = RunReport::new(
            "seed",
            "recipestore",
            "open",
            8,
            100.0,
            30.0,
            &r,
            "local",
            &schedule.spikes,
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.png");
        run(&path, &report).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
    }
}
