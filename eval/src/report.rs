//! `condenser-eval report`: the downstream answers of one or more runs as the seed project's table
//! (Compressed EM, ΔEM, Compressed F1, ΔF1, Ratio, Cost) per task model, compressor and target
//! ratio — deltas are paired, over the examples answered both with the full context and the
//! compressed one — the same F1 split by answer kind where a benchmark has several (Qasper's
//! extractive / abstractive / boolean / unanswerable), and a ratio-vs-ΔF1 plot per compressor
//! (SVG).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use plotters::prelude::*;

use crate::downstream::AnswerRow;

#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    pub task_model: String,
    pub benchmark: String,
    pub compressor: String,
    pub target_ratio: f64,
    pub n: usize,
    /// Compressed / full context tokens, ratio of sums.
    pub ratio: f64,
    pub em: f64,
    pub delta_em: f64,
    pub f1: f64,
    pub delta_f1: f64,
    /// Share of span answers still present in the compressed context.
    pub answer_recall: Option<f64>,
    pub cost_usd: f64,
}

type Key = (String, String, String, String);

pub fn summarise(rows: &[AnswerRow]) -> Vec<ReportRow> {
    let full: HashMap<(&str, &str), &AnswerRow> = rows
        .iter()
        .filter(|r| r.compressor == "identity")
        .map(|r| ((r.task_model.as_str(), r.id.as_str()), r))
        .collect();
    let mut groups: BTreeMap<Key, Vec<(&AnswerRow, &AnswerRow)>> = BTreeMap::new();
    for row in rows {
        let Some(reference) = full.get(&(row.task_model.as_str(), row.id.as_str())) else {
            continue;
        };
        let key = (
            row.task_model.clone(),
            row.benchmark.clone(),
            row.compressor.clone(),
            format!("{:.3}", row.target_ratio),
        );
        groups.entry(key).or_default().push((row, reference));
    }
    let mut out: Vec<ReportRow> = groups
        .into_iter()
        .map(|((task_model, benchmark, compressor, _), pairs)| {
            let n = pairs.len();
            let mean = |f: &dyn Fn(&AnswerRow, &AnswerRow) -> f64| {
                pairs.iter().map(|(r, full)| f(r, full)).sum::<f64>() / n as f64
            };
            let tokens_in: usize = pairs.iter().map(|(r, _)| r.context_tokens).sum();
            let tokens_out: usize = pairs.iter().map(|(r, _)| r.compressed_tokens).sum();
            let recall: Vec<bool> = pairs
                .iter()
                .filter_map(|(r, _)| r.answer_in_context)
                .collect();
            ReportRow {
                task_model,
                benchmark,
                compressor,
                target_ratio: pairs[0].0.target_ratio,
                n,
                ratio: tokens_out as f64 / tokens_in.max(1) as f64,
                em: mean(&|r, _| r.em),
                delta_em: mean(&|r, full| r.em - full.em),
                f1: mean(&|r, _| r.f1),
                delta_f1: mean(&|r, full| r.f1 - full.f1),
                answer_recall: (!recall.is_empty())
                    .then(|| recall.iter().filter(|x| **x).count() as f64 / recall.len() as f64),
                cost_usd: pairs.iter().map(|(r, _)| r.cost_usd).sum(),
            }
        })
        .collect();
    // Full context first, then compressors by name and ratio.
    out.sort_by(|a, b| {
        (
            a.task_model.as_str(),
            a.benchmark.as_str(),
            a.compressor != "identity",
            a.compressor.as_str(),
        )
            .cmp(&(
                b.task_model.as_str(),
                b.benchmark.as_str(),
                b.compressor != "identity",
                b.compressor.as_str(),
            ))
            .then(a.target_ratio.total_cmp(&b.target_ratio))
    });
    out
}

pub fn markdown(rows: &[ReportRow]) -> String {
    let mut out = String::from(
        "| task model | benchmark | compressor | target | n | Ratio | Compressed EM | ΔEM | Compressed F1 | ΔF1 | answer recall | Cost |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {} | {:.3} | {:.3} | {:+.3} | {:.3} | {:+.3} | {} | ${:.4} |\n",
            r.task_model,
            r.benchmark,
            r.compressor,
            r.target_ratio,
            r.n,
            r.ratio,
            r.em,
            r.delta_em,
            r.f1,
            r.delta_f1,
            r.answer_recall.map_or_else(|| "–".into(), |v| format!("{v:.3}")),
            r.cost_usd
        ));
    }
    out
}

/// Compressed F1 per answer kind, one row per row of `table` (`summarise(rows)`), a cell
/// `F1 (ΔF1, n)` per kind; `None` when every answer is of one kind.
pub fn markdown_by_answer_type(rows: &[AnswerRow], table: &[ReportRow]) -> Option<String> {
    let kind = |r: &AnswerRow| r.answer_type.clone().unwrap_or_else(|| "–".into());
    let kinds: std::collections::BTreeSet<String> = rows.iter().map(kind).collect();
    if kinds.len() < 2 {
        return None;
    }
    let key = |r: &ReportRow| {
        (
            r.task_model.clone(),
            r.benchmark.clone(),
            r.compressor.clone(),
            format!("{:.3}", r.target_ratio),
        )
    };
    let mut cells: HashMap<(Key, &str), String> = HashMap::new();
    for k in &kinds {
        let of_kind: Vec<AnswerRow> = rows.iter().filter(|r| kind(r) == *k).cloned().collect();
        for r in summarise(&of_kind) {
            cells.insert(
                (key(&r), k.as_str()),
                format!("{:.3} ({:+.3}, {})", r.f1, r.delta_f1, r.n),
            );
        }
    }
    let mut out = format!(
        "| task model | benchmark | compressor | target | {} |\n|---|---|---|---|{}\n",
        kinds.iter().cloned().collect::<Vec<_>>().join(" | "),
        "---|".repeat(kinds.len())
    );
    for r in table {
        let row: Vec<String> = kinds
            .iter()
            .map(|k| {
                cells
                    .get(&(key(r), k.as_str()))
                    .cloned()
                    .unwrap_or_else(|| "–".into())
            })
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {} |\n",
            r.task_model,
            r.benchmark,
            r.compressor,
            r.target_ratio,
            row.join(" | ")
        ));
    }
    Some(out)
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Ratio (x) against ΔF1 (y), one line per compressor (and task model), full context at (1, 0).
pub fn plot(rows: &[ReportRow], path: &Path, title: &str) -> anyhow::Result<()> {
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.compressor != "identity") {
        series
            .entry(format!("{} ({})", r.compressor, r.task_model))
            .or_default()
            .push((r.ratio, r.delta_f1));
    }
    let low = rows
        .iter()
        .map(|r| r.delta_f1)
        .fold(0.0f64, f64::min)
        .min(-0.05)
        - 0.02;
    line_chart(
        series,
        path,
        title,
        "ΔF1 vs full context",
        low..0.05,
        Some(0.0),
    )
}

/// Lines of (token ratio, y) points, one per series, with an optional horizontal reference.
pub fn line_chart(
    series: BTreeMap<String, Vec<(f64, f64)>>,
    path: &Path,
    title: &str,
    y_desc: &str,
    y_range: std::ops::Range<f64>,
    reference: Option<f64>,
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0f64..1.05f64, y_range)?;
    chart
        .configure_mesh()
        .x_desc("token ratio (compressed / full)")
        .y_desc(y_desc)
        .draw()?;
    if let Some(y) = reference {
        chart.draw_series(LineSeries::new([(0.0, y), (1.05, y)], BLACK.mix(0.3)))?;
    }
    for (i, (name, mut points)) in series.into_iter().enumerate() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 4, colour.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, compressor: &str, ratio: f64, f1: f64) -> AnswerRow {
        crate::downstream::test_row(id, compressor, ratio, "", f1)
    }

    #[test]
    fn deltas_are_paired_with_the_full_context_answer() {
        let rows = vec![
            row("a", "identity", 1.0, 1.0),
            row("b", "identity", 1.0, 0.0),
            row("a", "truncate", 0.35, 0.5),
            row("b", "truncate", 0.35, 1.0),
            // No full-context answer for c: left out of every delta.
            row("c", "truncate", 0.35, 0.0),
        ];
        let report = summarise(&rows);
        assert_eq!(report[0].compressor, "identity");
        let t = &report[1];
        assert_eq!((t.compressor.as_str(), t.n), ("truncate", 2));
        assert!((t.f1 - 0.75).abs() < 1e-9);
        assert!((t.delta_f1 - 0.25).abs() < 1e-9);
        assert!((t.ratio - 0.35).abs() < 1e-9);
        let md = markdown(&report);
        assert!(
            md.contains("| m | hotpotqa | truncate | 0.35 | 2 | 0.350 |"),
            "{md}"
        );
        assert!(md.contains("+0.250"), "{md}");
    }

    #[test]
    fn f1_is_split_by_answer_kind_when_there_are_several() {
        let typed = |id: &str, compressor: &str, ratio: f64, f1: f64, kind: &str| AnswerRow {
            answer_type: Some(kind.into()),
            ..row(id, compressor, ratio, f1)
        };
        let rows = vec![
            typed("a", "identity", 1.0, 1.0, "boolean"),
            typed("a", "truncate", 0.35, 0.0, "boolean"),
            typed("b", "identity", 1.0, 0.5, "extractive"),
            typed("b", "truncate", 0.35, 0.75, "extractive"),
        ];
        let md = markdown_by_answer_type(&rows, &summarise(&rows)).expect("two kinds");
        assert!(md.contains("| boolean | extractive |"), "{md}");
        assert!(
            md.contains("| truncate | 0.35 | 0.000 (-1.000, 1) | 0.750 (+0.250, 1) |"),
            "{md}"
        );
        let one_kind: Vec<AnswerRow> = rows.into_iter().filter(|r| r.id == "a").collect();
        assert_eq!(
            markdown_by_answer_type(&one_kind, &summarise(&one_kind)),
            None
        );
    }

    #[test]
    fn plot_writes_an_svg_with_every_series() {
        let rows = vec![
            row("a", "identity", 1.0, 1.0),
            row("a", "truncate", 0.35, 0.5),
            row("a", "extractive", 0.35, 1.0),
        ];
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("plot.svg");
        plot(&summarise(&rows), &path, "test").expect("plots");
        let svg = std::fs::read_to_string(&path).expect("svg");
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("truncate (m)") && svg.contains("extractive (m)"));
    }
}
