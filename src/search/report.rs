//! Outputs of a search: the best config, the final population, and a plot of the population with
//! its Pareto front (loss against latency; against GFLOPs when no latency was measured), drawn as
//! SVG by `plotters` (its SVG backend needs no system fonts or C libraries).

use std::path::Path;

use plotters::prelude::*;

use super::evolution::{Candidate, SearchResult};
use crate::fsio::write_atomic_creating_dir as write_file;
use crate::{Error, Result};

/// Indices of the candidates no other candidate beats in both `x` and loss (lower is better in
/// both), sorted by `x`.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..points.len()).filter(|&i| points[i].0.is_finite() && points[i].1.is_finite()).collect();
    idx.sort_by(|&a, &b| points[a].0.total_cmp(&points[b].0).then(points[a].1.total_cmp(&points[b].1)));
    let mut front = Vec::new();
    let mut best_loss = f64::INFINITY;
    for i in idx {
        if points[i].1 < best_loss {
            best_loss = points[i].1;
            front.push(i);
        }
    }
    front
}

/// The x axis of the plot: latency when every candidate has one, otherwise GFLOPs.
fn x_axis(pop: &[Candidate]) -> (&'static str, Vec<f64>) {
    if pop.iter().all(|c| c.latency.is_some()) {
        ("latency (ms)", pop.iter().map(|c| c.latency.map(|l| l.total_ms()).unwrap_or(f64::NAN)).collect())
    } else {
        ("GFLOPs", pop.iter().map(|c| c.gflops).collect())
    }
}

fn plot_err(e: impl std::fmt::Display, path: &Path) -> Error {
    Error::Format { path: path.to_path_buf(), msg: format!("drawing the plot failed: {e}") }
}

/// Draws the population (grey) and its Pareto front (line) to an SVG file, atomically.
pub fn plot_pareto(result: &SearchResult, path: &Path) -> Result<()> {
    let pop = &result.population;
    let (x_label, xs) = x_axis(pop);
    let points: Vec<(f64, f64)> = xs.iter().copied().zip(pop.iter().map(|c| c.loss)).collect();
    let front: Vec<(f64, f64)> = pareto_front(&points).into_iter().map(|i| points[i]).collect();
    let finite = |v: &mut dyn Iterator<Item = f64>| {
        v.filter(|x| x.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)))
    };
    let (x0, x1) = finite(&mut points.iter().map(|p| p.0));
    let (y0, y1) = finite(&mut points.iter().map(|p| p.1));
    if !x0.is_finite() || !y0.is_finite() {
        return Err(Error::invalid("plot_pareto", "no finite points to plot"));
    }
    // Pad the ranges so that points do not sit on the frame (and a single point has a range).
    let pad = |lo: f64, hi: f64| {
        let d = ((hi - lo) * 0.05).max(hi.abs().max(1e-9) * 0.01);
        (lo - d, hi + d)
    };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0, y1));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(e, path))?;
        let title = format!("Search population ({} subnets) and Pareto front; constraints: {}", pop.len(), result.constraints.describe());
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| plot_err(e, path))?;
        chart.configure_mesh().x_desc(x_label).y_desc("validation loss").draw().map_err(|e| plot_err(e, path))?;
        chart
            .draw_series(points.iter().filter(|p| p.0.is_finite()).map(|&p| Circle::new(p, 3, RGBColor(150, 150, 150).filled())))
            .map_err(|e| plot_err(e, path))?
            .label("population")
            .legend(|(x, y)| Circle::new((x, y), 3, RGBColor(150, 150, 150).filled()));
        chart
            .draw_series(LineSeries::new(front.iter().copied(), RED.stroke_width(2)).point_size(4))
            .map_err(|e| plot_err(e, path))?
            .label("Pareto front")
            .legend(|(x, y)| PathElement::new(vec![(x - 10, y), (x + 10, y)], RED.stroke_width(2)));
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| plot_err(e, path))?;
        root.present().map_err(|e| plot_err(e, path))?;
    }
    write_file(path, svg.as_bytes())
}

fn to_json<T: serde::Serialize>(v: &T, path: &Path) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(|e| Error::Format { path: path.to_path_buf(), msg: e.to_string() })
}

/// Writes `best.json` (the best config), `population.json` (the whole result: every candidate
/// with loss, latency, GFLOPs and params, plus history and settings) and `pareto.svg` into `dir`.
pub fn save_search(result: &SearchResult, dir: &Path) -> Result<()> {
    let [best, pop, plot] = SEARCH_FILES.map(|f| dir.join(f));
    write_file(&best, &to_json(&result.best.config, &best)?)?;
    write_file(&pop, &to_json(result, &pop)?)?;
    plot_pareto(result, &plot)
}

/// What [`save_search`] writes into its directory: the best config, the population, the plot.
pub const SEARCH_FILES: [&str; 3] = ["best.json", "population.json", "pareto.svg"];

#[cfg(test)]
mod tests {
    use super::pareto_front;

    #[test]
    fn front_keeps_only_non_dominated_points() {
        let pts = [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (4.0, 1.0), (2.5, 3.0), (f64::NAN, 0.0)];
        assert_eq!(pareto_front(&pts), vec![0, 1, 3]);
    }
}
