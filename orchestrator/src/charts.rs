//! Charts of a run, as SVG: a value over time (equity, or one market's
//! profit and loss) with its drawdown below it and the fills marked on it;
//! and `report.html`, one self-contained page with the report's table, the
//! charts and the trade log.
//!
//! Plain SVG written here: a line, an area and two kinds of marks need no
//! plotting library.

use std::fmt::Write as _;

/// One chart's data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curve {
    /// Title.
    pub title: String,
    /// Its file's name without `.svg` (`equity`, `pnl-BTC`).
    pub name: String,
    /// (market time ms, value), one per time step, in time order.
    pub points: Vec<(i64, f64)>,
    /// Fills to mark: (market time ms, true for a buy).
    pub fills: Vec<(i64, bool)>,
}

/// Chart size, in SVG units.
pub const WIDTH: f64 = 900.0;
/// The value panel's height.
pub const VALUE_HEIGHT: f64 = 260.0;
/// The drawdown panel's height.
pub const DRAWDOWN_HEIGHT: f64 = 90.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 10.0;
const TOP: f64 = 30.0;
const GAP: f64 = 25.0;
const BOTTOM: f64 = 25.0;

/// Points kept per line: one per pixel column is all a screen shows; each
/// column keeps its lowest and highest value, so no peak or trough is lost.
const COLUMNS: usize = 800;

/// A series of one value per time step kept in bounded memory however
/// long the run: steps are gathered into buckets of equal length, each
/// keeping its lowest and highest point; when there are too many buckets,
/// neighbours merge and the buckets double in length. What a chart draws
/// (each column's extremes) is never lost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Downsampled {
    /// Steps per bucket.
    per: usize,
    /// Steps in the last bucket.
    filled: usize,
    /// (lowest, highest) point of each bucket.
    buckets: Vec<((i64, f64), (i64, f64))>,
}

/// Buckets kept at most (two points each).
const BUCKETS: usize = 2 * COLUMNS;

impl Downsampled {
    /// Adds the next step's value.
    pub fn push(&mut self, time_ms: i64, value: f64) {
        let point = (time_ms, value);
        let per = self.per.max(1);
        match self.buckets.last_mut() {
            Some((low, high)) if self.filled < per => {
                if value < low.1 {
                    *low = point;
                }
                if value > high.1 {
                    *high = point;
                }
                self.filled += 1;
            }
            _ => {
                if self.buckets.len() == BUCKETS {
                    self.merge();
                }
                self.buckets.push((point, point));
                self.filled = 1;
            }
        }
    }

    /// Merges neighbouring buckets: half as many, twice as long.
    fn merge(&mut self) {
        let merged = self
            .buckets
            .chunks(2)
            .map(|pair| {
                let low = pair.iter().map(|b| b.0).min_by(|a, b| a.1.total_cmp(&b.1));
                let high = pair.iter().map(|b| b.1).max_by(|a, b| a.1.total_cmp(&b.1));
                (low.unwrap_or(pair[0].0), high.unwrap_or(pair[0].1))
            })
            .collect();
        self.buckets = merged;
        self.per = self.per.max(1) * 2;
        // The last bucket is whole: the next step starts a new one.
        self.filled = self.per;
    }

    /// The points kept, in time order.
    pub fn points(&self) -> Vec<(i64, f64)> {
        let mut points = Vec::with_capacity(2 * self.buckets.len());
        for &(low, high) in &self.buckets {
            push_extremes(&mut points, low, high);
        }
        points
    }
}

/// Appends a stretch's lowest and highest points in time order (once when
/// they are the same point).
fn push_extremes(points: &mut Vec<(i64, f64)>, low: (i64, f64), high: (i64, f64)) {
    let (first, second) = if low.0 <= high.0 {
        (low, high)
    } else {
        (high, low)
    };
    points.push(first);
    if second != first {
        points.push(second);
    }
}

/// Drawdown from the running peak, as a fraction of it, at each point.
pub fn drawdowns(points: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let mut peak = f64::MIN;
    points
        .iter()
        .map(|&(t, v)| {
            peak = peak.max(v);
            let fall = match peak > 0.0 {
                true => (peak - v) / peak,
                false => 0.0,
            };
            (t, fall.max(0.0))
        })
        .collect()
}

/// At most two points per column of the plot (its lowest and highest, in
/// time order); all of them when there are few.
pub fn thin(points: &[(i64, f64)], columns: usize) -> Vec<(i64, f64)> {
    if points.len() <= 2 * columns || columns == 0 {
        return points.to_vec();
    }
    let per = points.len().div_ceil(columns);
    let mut kept = Vec::with_capacity(2 * columns);
    for chunk in points.chunks(per) {
        let low = chunk.iter().min_by(|a, b| a.1.total_cmp(&b.1));
        let high = chunk.iter().max_by(|a, b| a.1.total_cmp(&b.1));
        if let (Some(&low), Some(&high)) = (low, high) {
            push_extremes(&mut kept, low, high);
        }
    }
    kept
}

/// Maps market time and value to SVG coordinates in a panel.
struct Scale {
    t0: f64,
    t1: f64,
    v0: f64,
    v1: f64,
    top: f64,
    height: f64,
}

impl Scale {
    fn of(points: &[(i64, f64)], top: f64, height: f64) -> Self {
        let (t0, t1) = match (points.first(), points.last()) {
            (Some(a), Some(b)) => (a.0 as f64, b.0 as f64),
            _ => (0.0, 1.0),
        };
        let v0 = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let v1 = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let (v0, v1) = match (v0.is_finite(), v1 > v0) {
            (true, true) => (v0, v1),
            (true, false) => (v0 - 1.0, v0 + 1.0),
            (false, _) => (0.0, 1.0),
        };
        Self {
            t0,
            t1: if t1 > t0 { t1 } else { t0 + 1.0 },
            v0,
            v1,
            top,
            height,
        }
    }

    fn x(&self, t: i64) -> f64 {
        let width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
        MARGIN_LEFT + (t as f64 - self.t0) / (self.t1 - self.t0) * width
    }

    fn y(&self, v: f64) -> f64 {
        self.top + (self.v1 - v) / (self.v1 - self.v0) * self.height
    }
}

fn polyline(points: &[(i64, f64)], scale: &Scale) -> String {
    let mut path = String::with_capacity(points.len() * 14);
    for (i, &(t, v)) in points.iter().enumerate() {
        if i > 0 {
            path.push(' ');
        }
        let _ = write!(path, "{:.1},{:.1}", scale.x(t), scale.y(v));
    }
    path
}

pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The value a fill is marked at: the curve's value at the fill's step
/// (the last point at or before it).
fn value_at(points: &[(i64, f64)], t: i64) -> Option<f64> {
    let at = points.partition_point(|p| p.0 <= t);
    points.get(at.checked_sub(1)?).map(|p| p.1)
}

/// The chart of `curve` (see the module docs).
pub fn svg(curve: &Curve) -> String {
    let height = TOP + VALUE_HEIGHT + GAP + DRAWDOWN_HEIGHT + BOTTOM;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{MARGIN_LEFT}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        escape(&curve.title)
    );
    if curve.points.is_empty() {
        let _ = writeln!(s, r#"<text x="{MARGIN_LEFT}" y="60">no data</text></svg>"#);
        return s;
    }
    let value = Scale::of(&curve.points, TOP, VALUE_HEIGHT);
    let falls = drawdowns(&curve.points);
    let mut worst = Scale::of(&falls, TOP + VALUE_HEIGHT + GAP, DRAWDOWN_HEIGHT);
    // Drawdown hangs from zero.
    (worst.v1, worst.v0) = (
        0.0,
        -falls.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9),
    );
    let right = WIDTH - MARGIN_RIGHT;
    for (scale, v) in [(&value, value.v1), (&value, value.v0)] {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{v:.2}</text>"##,
            MARGIN_LEFT - 6.0,
            scale.y(v) + 4.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{MARGIN_LEFT}" y="{TOP}" width="{:.1}" height="{VALUE_HEIGHT}" fill="none" stroke="#ccc"/>"##,
        right - MARGIN_LEFT
    );
    let line = thin(&curve.points, COLUMNS);
    let _ = writeln!(
        s,
        r##"<polyline class="value" fill="none" stroke="#1f5fbf" stroke-width="1.2" points="{}"/>"##,
        polyline(&line, &value)
    );
    // Fills: one mark per side and pixel column.
    let mut marked = std::collections::BTreeSet::new();
    for &(t, buy) in &curve.fills {
        let Some(v) = value_at(&curve.points, t) else {
            continue;
        };
        let (x, y) = (value.x(t), value.y(v));
        if !marked.insert((x.round() as i64, buy)) {
            continue;
        }
        let (points, colour, class) = match buy {
            true => (
                format!(
                    "{x:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
                    y + 3.0,
                    x - 4.0,
                    y + 10.0,
                    x + 4.0,
                    y + 10.0
                ),
                "#1a9641",
                "buy",
            ),
            false => (
                format!(
                    "{x:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
                    y - 3.0,
                    x - 4.0,
                    y - 10.0,
                    x + 4.0,
                    y - 10.0
                ),
                "#d7191c",
                "sell",
            ),
        };
        let _ = writeln!(
            s,
            r#"<polygon class="{class}" fill="{colour}" points="{points}"/>"#
        );
    }
    let top = worst.top;
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">0%</text>"##,
        MARGIN_LEFT - 6.0,
        top + 4.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">-{:.1}%</text>"##,
        MARGIN_LEFT - 6.0,
        top + DRAWDOWN_HEIGHT + 4.0,
        -worst.v0 * 100.0
    );
    let area: Vec<(i64, f64)> = thin(&falls, COLUMNS)
        .iter()
        .map(|&(t, f)| (t, -f))
        .collect();
    let (first, last) = (curve.points[0].0, curve.points[curve.points.len() - 1].0);
    let _ = writeln!(
        s,
        r##"<polygon class="drawdown" fill="#f4a582" stroke="#d6604d" points="{:.1},{top:.1} {} {:.1},{top:.1}"/>"##,
        worst.x(first),
        polyline(&area, &worst),
        worst.x(last)
    );
    let _ = writeln!(
        s,
        r##"<text x="{MARGIN_LEFT}" y="{:.1}" fill="#555">{} to {} (drawdown below)</text>"##,
        height - 8.0,
        bus_core::model::time::iso8601_utc(first),
        bus_core::model::time::iso8601_utc(last)
    );
    s.push_str("</svg>\n");
    s
}

/// `report.html`: the report's table, the charts (inline), and the first
/// `max_rows` rows of the trade log, in one file with nothing to fetch.
pub fn html(table: &str, charts: &[String], trade_log: &str, max_rows: usize) -> String {
    let mut s = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>Bistoury report</title>\n\
         <style>body{font-family:sans-serif;margin:2em;max-width:1000px}pre{background:#f6f6f6;padding:1em;overflow-x:auto}\
         table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}</style>\n\
         </head><body>\n<h1>Bistoury report</h1>\n",
    );
    let _ = writeln!(s, "<pre>{}</pre>", escape(table));
    s.push_str("<h2>Equity and drawdown</h2>\n");
    for chart in charts {
        s.push_str(chart);
    }
    let mut rows = trade_log.lines();
    let header = rows.next().unwrap_or_default();
    let rows: Vec<&str> = rows.collect();
    let _ = writeln!(s, "<h2>Trade log ({} fills)</h2>\n<table>", rows.len());
    let cells = |row: &str, tag: &str| {
        let mut line = String::from("<tr>");
        for cell in split_csv(row) {
            let _ = write!(line, "<{tag}>{}</{tag}>", escape(&cell));
        }
        line.push_str("</tr>\n");
        line
    };
    s.push_str(&cells(header, "th"));
    for row in rows.iter().take(max_rows) {
        s.push_str(&cells(row, "td"));
    }
    s.push_str("</table>\n");
    if rows.len() > max_rows {
        let _ = writeln!(
            s,
            "<p>{} more fills in trades.csv.</p>",
            rows.len() - max_rows
        );
    }
    s.push_str("</body></html>\n");
    s
}

/// The fields of one RFC 4180 CSV row.
fn split_csv(row: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = row.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap_or(&mut String::new()).push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => {
                if let Some(field) = fields.last_mut() {
                    field.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawdown_is_the_fall_from_the_running_peak() {
        let points = [(0, 100.0), (1, 120.0), (2, 90.0), (3, 130.0), (4, 117.0)];
        let falls: Vec<f64> = drawdowns(&points).iter().map(|p| p.1).collect();
        let expected = [0.0, 0.0, 0.25, 0.0, 0.1];
        for (got, want) in falls.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{falls:?}");
        }
    }

    #[test]
    fn thinning_keeps_every_column_s_extremes_in_time_order() {
        let points: Vec<(i64, f64)> = (0..10_000)
            .map(|i| (i, ((i * 7919) % 1000) as f64))
            .collect();
        let kept = thin(&points, 100);
        assert!(kept.len() <= 200);
        assert!(kept.windows(2).all(|w| w[0].0 < w[1].0));
        let max = |p: &[(i64, f64)]| p.iter().map(|p| p.1).fold(f64::MIN, f64::max);
        let min = |p: &[(i64, f64)]| p.iter().map(|p| p.1).fold(f64::MAX, f64::min);
        assert_eq!((max(&kept), min(&kept)), (max(&points), min(&points)));
        assert_eq!(thin(&points[..50], 100), points[..50].to_vec());
    }

    #[test]
    fn a_downsampled_series_stays_small_keeps_every_extreme_and_all_of_a_short_run() {
        let values = |n: i64| {
            (0..n).map(move |i| (i * 60_000, ((i * 7919) % 1000) as f64 - (i as f64) / 100.0))
        };
        let mut short = Downsampled::default();
        values(500).for_each(|(t, v)| short.push(t, v));
        assert_eq!(short.points(), values(500).collect::<Vec<_>>());
        let mut long = Downsampled::default();
        values(1_000_000).for_each(|(t, v)| long.push(t, v));
        let kept = long.points();
        assert!(kept.len() <= 2 * BUCKETS, "{}", kept.len());
        assert!(kept.windows(2).all(|w| w[0].0 < w[1].0));
        let all: Vec<(i64, f64)> = values(1_000_000).collect();
        let max = |p: &[(i64, f64)]| p.iter().map(|p| p.1).fold(f64::MIN, f64::max);
        let min = |p: &[(i64, f64)]| p.iter().map(|p| p.1).fold(f64::MAX, f64::min);
        assert_eq!((max(&kept), min(&kept)), (max(&all), min(&all)));
        // Buckets cover equal stretches of time: the middle point sits near
        // the middle of the run.
        let middle = kept[kept.len() / 2].0 as f64 / all[all.len() - 1].0 as f64;
        assert!((0.45..0.55).contains(&middle), "{middle}");
    }

    #[test]
    fn the_line_the_marks_and_the_drawdown_are_where_the_values_say() {
        let curve = Curve {
            title: "equity <total>".into(),
            name: "equity".into(),
            points: vec![(0, 100.0), (60_000, 200.0), (120_000, 150.0)],
            fills: vec![(60_000, true), (120_000, false)],
        };
        let chart = svg(&curve);
        assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
        assert!(chart.contains("equity &lt;total&gt;"));
        // x from 70 to 890 over the time range, y from 30 (200) to 290 (100).
        assert!(
            chart.contains(r#"points="70.0,290.0 480.0,30.0 890.0,160.0""#),
            "{chart}"
        );
        assert_eq!(chart.matches(r#"class="buy""#).count(), 1);
        assert_eq!(chart.matches(r#"class="sell""#).count(), 1);
        // The worst drawdown, 25 %, is the bottom of its panel.
        assert!(chart.contains("-25.0%"), "{chart}");
        assert!(
            chart.contains("890.0,405.0"),
            "the 25 % fall at the panel bottom: {chart}"
        );
    }

    #[test]
    fn the_page_holds_the_table_the_charts_and_the_trade_log() {
        let log = "a,b,reason\n1,2,\"x, y\"\n3,4,z\n";
        let page = html("line <1>", &["<svg>chart</svg>".into()], log, 1);
        assert!(page.contains("<pre>line &lt;1&gt;</pre>"));
        assert!(page.contains("<svg>chart</svg>"));
        assert!(page.contains("<td>x, y</td>"));
        assert!(!page.contains("<td>z</td>"), "one row shown");
        assert!(page.contains("1 more fills in trades.csv"));
        assert!(!page.contains("src=\"http"), "nothing to fetch");
    }
}
