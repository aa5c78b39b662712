//! ROC, precision-recall and PRO curves as small standalone SVG files,
//! written by hand (a plotting crate would weigh more than the whole metrics
//! module). The y axis runs from 0 to 1, the x axis too except for the PRO
//! curve (0 to the FPR limit of AUPRO), and the histogram of a class's
//! image scores with its decision threshold.

use std::fmt::Write;

use super::binary::Curves;
use super::report::{ClassResult, Metric};

/// One curve of a chart.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// Legend text.
    pub label: &'a str,
    /// Points in [0, 1]², in drawing order.
    pub points: &'a [(f64, f64)],
}

const W: f64 = 480.0;
const H: f64 = 400.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// An SVG line chart over the unit square. `diagonal` draws the chance
/// line of a ROC plot.
pub fn chart(title: &str, x_label: &str, y_label: &str, series: &[Series], diagonal: bool) -> String {
    draw(title, x_label, y_label, series, &Style { x_max: 1.0, diagonal, shade: false })
}

/// The PRO curve of AUPRO: per-region overlap against the false positive
/// rate, the x axis up to `fpr_limit`, the area under the curve shaded.
/// Coordinates have four decimals (a ten-thousandth of a pixel), so the
/// area of the drawn points is the reported AUPRO to ~1e-7.
pub fn pro_chart(title: &str, label: &str, points: &[(f64, f64)], fpr_limit: f64) -> String {
    let series = [Series { label, points }];
    draw(
        title,
        "false positive rate",
        "per-region overlap",
        &series,
        &Style { x_max: fpr_limit, diagonal: false, shade: true },
    )
}

/// How a chart differs from the unit-square line chart.
struct Style {
    /// The x axis runs from 0 to this.
    x_max: f64,
    diagonal: bool,
    /// Shade the area under the (first) curve.
    shade: bool,
}

fn draw(title: &str, x_label: &str, y_label: &str, series: &[Series], style: &Style) -> String {
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x_max = style.x_max;
    let sx = |x: f64| LEFT + (x / x_max).clamp(0.0, 1.0) * pw;
    let sy = |y: f64| TOP + (1.0 - y.clamp(0.0, 1.0)) * ph;
    // Enough decimals to tell the x ticks apart (0.3 → 0.06 steps: two).
    let x_decimals = (-(x_max / 5.0).log10()).ceil().max(1.0) as usize;
    // Curves drawn with 2 decimals (a hundredth of a pixel), the shaded
    // one with 4 so that its area can be checked against the metric.
    let decimals = if style.shade { 4 } else { 2 };
    let mut s = svg_start(title);
    for i in 0..=5 {
        let v = i as f64 / 5.0;
        let (x, y) = (sx(v * x_max), sy(v));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            sy(0.0),
            sy(1.0),
            sx(0.0),
            sx(x_max)
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{:.x_decimals$}</text><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.1}</text>"#,
            sy(0.0) + 16.0,
            v * x_max,
            sx(0.0) - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        H - 12.0,
        escape(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        escape(y_label)
    );
    if style.diagonal {
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="4 4"/>"##,
            sx(0.0),
            sy(0.0),
            sx(1.0),
            sy(1.0)
        );
    }
    for (i, ser) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut path = String::new();
        for (k, &(x, y)) in ser.points.iter().enumerate() {
            let _ = write!(path, "{}{:.decimals$},{:.decimals$}", if k == 0 { "M" } else { " L" }, sx(x), sy(y));
        }
        if style.shade && i == 0 {
            if let (Some(first), Some(last)) = (ser.points.first(), ser.points.last()) {
                let _ = writeln!(
                    s,
                    r#"<path class="area" d="{path} L{:.decimals$},{:.decimals$} L{:.decimals$},{:.decimals$} Z" fill="{colour}" fill-opacity="0.18" stroke="none"/>"#,
                    sx(last.0),
                    sy(0.0),
                    sx(first.0),
                    sy(0.0)
                );
            }
        }
        let _ = writeln!(s, r#"<path class="curve" d="{path}" fill="none" stroke="{colour}" stroke-width="1.8"/>"#);
    }
    // The frame over the shading, the legend over the curves.
    let _ = writeln!(s, r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#);
    if !series.is_empty() {
        let lx = LEFT + pw - 196.0;
        let top = TOP + ph - 26.0 - 18.0 * (series.len() - 1) as f64;
        let _ = writeln!(
            s,
            r##"<rect x="{lx:.1}" y="{:.1}" width="188" height="{:.1}" fill="white" fill-opacity="0.85" stroke="#bbb"/>"##,
            top - 4.0,
            18.0 * series.len() as f64 + 4.0
        );
    }
    for (i, ser) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let ly = TOP + ph - 12.0 - 18.0 * (series.len() - 1 - i) as f64;
        let lx = LEFT + pw - 190.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            ly - 4.0,
            lx + 20.0,
            ly - 4.0,
            lx + 26.0,
            ly,
            escape(ser.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The charts of one class, as (file suffix, SVG): `roc` and `pr` (image
/// and, unless image-only, pixel level) and `pro` (the PRO curve of AUPRO,
/// when defined). Empty when the class has no curves (one label only, or
/// evaluated without plots). Shared by `--plots` and the HTML report.
pub fn class_charts(class: &ClassResult, fpr_limit: f64) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let levels: Vec<(&Curves, String, String)> = [
        ("image", &class.image_curves, Metric::IAuroc, Metric::IAp),
        ("pixel", &class.pixel_curves, Metric::PAuroc, Metric::PAp),
    ]
    .into_iter()
    .filter_map(|(level, curves, auc, ap)| {
        curves.as_ref().map(|c| {
            (
                c,
                format!("{level} (AUROC {:.1})", 100.0 * class.get(auc).unwrap_or(f64::NAN)),
                format!("{level} (AP {:.1})", 100.0 * class.get(ap).unwrap_or(f64::NAN)),
            )
        })
    })
    .collect();
    if !levels.is_empty() {
        let roc: Vec<Series> = levels.iter().map(|(c, label, _)| Series { label, points: &c.roc }).collect();
        let pr: Vec<Series> = levels.iter().map(|(c, _, label)| Series { label, points: &c.pr }).collect();
        out.push((
            "roc",
            chart(&format!("{} — ROC", class.name), "false positive rate", "true positive rate", &roc, true),
        ));
        out.push(("pr", chart(&format!("{} — precision-recall", class.name), "recall", "precision", &pr, false)));
    }
    if let (Some(curve), Some(aupro)) = (&class.pro_curve, class.get(Metric::Aupro)) {
        out.push((
            "pro",
            pro_chart(
                &format!("{} — PRO (FPR < {fpr_limit})", class.name),
                &format!("AUPRO {:.1} (area / last FPR)", 100.0 * aupro),
                curve,
                fpr_limit,
            ),
        ));
    }
    out
}

/// Bins of the score histogram: enough to show the shape of a few hundred
/// scores, few enough that each bar stays wider than a pixel or two.
const HISTOGRAM_BINS: usize = 40;

/// The histogram of image scores of a class, good images in blue and
/// defective ones in red over one set of bins (bars drawn semi-transparent,
/// so overlaps show), with the decision threshold as a dashed vertical
/// line labelled `threshold.1`. Counts on the y axis.
pub fn histogram(title: &str, good: &[f64], defective: &[f64], threshold: Option<(f64, &str)>) -> String {
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let all = good.iter().chain(defective).copied().chain(threshold.map(|t| t.0)).filter(|v| v.is_finite());
    let (mut lo, mut hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi <= lo {
        // One distinct value: a unit-wide range around it.
        (lo, hi) = (lo - 0.5, lo + 0.5);
    }
    let width = (hi - lo) / HISTOGRAM_BINS as f64;
    let bin = |v: f64| (((v - lo) / width) as usize).min(HISTOGRAM_BINS - 1);
    let count = |values: &[f64]| {
        let mut bins = vec![0usize; HISTOGRAM_BINS];
        for &v in values.iter().filter(|v| v.is_finite()) {
            bins[bin(v)] += 1;
        }
        bins
    };
    let (good_bins, defective_bins) = (count(good), count(defective));
    // The y axis in whole numbers of images, at most five steps of 1, 2 or
    // 5 times a power of ten.
    let most = good_bins.iter().chain(&defective_bins).copied().max().unwrap_or(0).max(1);
    let step = count_step(most);
    let top = most.div_ceil(step) * step;
    let sx = |v: f64| LEFT + ((v - lo) / (hi - lo)).clamp(0.0, 1.0) * pw;
    let sy = |n: f64| TOP + (1.0 - n / top as f64) * ph;
    let mut s = svg_start(title);
    for i in 0..=5 {
        let v = lo + (hi - lo) * i as f64 / 5.0;
        let x = sx(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            sy(0.0),
            sy(top as f64),
            sy(0.0) + 16.0,
            tick(v, hi - lo)
        );
    }
    for n in (0..=top).step_by(step) {
        let y = sy(n as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{n}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ =
        writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">image score</text>"#, LEFT + pw / 2.0, H - 12.0);
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">images</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    for (bins, colour, class) in [(&good_bins, COLOURS[0], "good"), (&defective_bins, COLOURS[1], "defective")] {
        for (k, &n) in bins.iter().enumerate().filter(|b| *b.1 > 0) {
            let x0 = sx(lo + width * k as f64);
            let x1 = sx(lo + width * (k + 1) as f64);
            let _ = writeln!(
                s,
                r#"<rect class="{class}" x="{x0:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="{colour}" fill-opacity="0.5" stroke="{colour}" stroke-width="0.5"/>"#,
                sy(n as f64),
                x1 - x0,
                sy(0.0) - sy(n as f64)
            );
        }
    }
    if let Some((t, label)) = threshold.filter(|t| t.0.is_finite()) {
        let x = sx(t);
        let _ = writeln!(
            s,
            r#"<line class="threshold" x1="{x:.2}" y1="{TOP}" x2="{x:.2}" y2="{:.1}" stroke="black" stroke-width="1.5" stroke-dasharray="6 3"/>"#,
            sy(0.0)
        );
        // The label above the frame (clear of bars and legend), on the side
        // of the line with more room.
        let (anchor, dx) = if x > LEFT + pw / 2.0 { ("end", 4.0) } else { ("start", -4.0) };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
            x + dx,
            TOP - 4.0,
            escape(label)
        );
    }
    let _ = writeln!(s, r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#);
    let lx = LEFT + pw - 150.0;
    for (i, (colour, text)) in
        [(COLOURS[0], format!("good ({})", good.len())), (COLOURS[1], format!("defective ({})", defective.len()))]
            .iter()
            .enumerate()
    {
        let ly = TOP + 34.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="14" height="10" fill="{colour}" fill-opacity="0.5" stroke="{colour}"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 9.0,
            lx + 20.0,
            escape(text)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The step of at most five ticks from 0 to `most` or above: 1, 2 or 5
/// times a power of ten.
fn count_step(most: usize) -> usize {
    let mut magnitude = 1usize;
    loop {
        for m in [1, 2, 5] {
            if m * magnitude * 5 >= most {
                return m * magnitude;
            }
        }
        magnitude *= 10;
    }
}

/// A tick label with as many decimals as a fifth of `span` needs.
fn tick(v: f64, span: f64) -> String {
    let decimals = (-(span / 5.0).log10()).ceil().clamp(0.0, 8.0) as usize;
    format!("{v:.decimals$}")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A file-name-safe form of a class name.
pub fn file_stem(class: &str) -> String {
    let stem: String = class
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
        .collect();
    if stem.is_empty() || stem.starts_with('.') {
        format!("class{stem}")
    } else {
        stem
    }
}

/// The opening of a plot: the SVG element, a white background and the
/// title. (`write!` into a String cannot fail.)
fn svg_start(title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#, W / 2.0, escape(title));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_is_well_formed_svg() {
        let pts = [(0.0, 0.0), (0.5, 0.9), (1.0, 1.0)];
        let svg = chart("bottle <ROC>", "FPR", "TPR", &[Series { label: "image & pixel", points: &pts }], true);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("bottle &lt;ROC&gt;") && svg.contains("image &amp; pixel"));
        assert!(svg.contains("M60.00,350.00 L260.00,71.00 L460.00,40.00"), "{svg}");
    }

    /// The (x, y) data points of the `class="curve"` path of a chart whose
    /// x axis runs to `x_max`.
    pub(crate) fn curve_points(svg: &str, x_max: f64) -> Vec<(f64, f64)> {
        let start = svg.find(r#"class="curve" d=""#).expect("a curve") + r#"class="curve" d=""#.len();
        let d = &svg[start..start + svg[start..].find('"').unwrap()];
        d.split(['M', 'L'])
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                let (x, y) = p.trim().split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                ((x - LEFT) / (W - LEFT - RIGHT) * x_max, (H - BOTTOM - y) / (H - TOP - BOTTOM))
            })
            .collect()
    }

    #[test]
    fn pro_chart_draws_the_points_to_the_fpr_limit_with_the_area_shaded() {
        let pts = [(0.0, 0.2), (0.05, 0.6), (0.1234567, 0.8), (0.29, 0.95)];
        let svg = pro_chart("bottle — PRO", "AUPRO 80.0", &pts, 0.3);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // The x axis ends at the limit: ticks 0.00 .. 0.30.
        assert!(svg.contains(">0.06</text>") && svg.contains(">0.30</text>"), "{svg}");
        assert!(svg.contains(r#"class="area""#) && svg.contains("fill-opacity"));
        let back = curve_points(&svg, 0.3);
        assert_eq!(back.len(), pts.len());
        for (a, b) in back.iter().zip(&pts) {
            assert!((a.0 - b.0).abs() < 1e-7 && (a.1 - b.1).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn histogram_bins_both_labels_and_marks_the_threshold() {
        let good = [0.1, 0.1, 0.2];
        let defective = [0.9, 0.5];
        let svg = histogram("c <scores>", &good, &defective, Some((0.4, "F1-optimal threshold 0.4")));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("c &lt;scores&gt;") && svg.contains("good (3)") && svg.contains("defective (2)"));
        // Two good bins (0.1 twice, 0.2), two defective ones.
        assert_eq!(svg.matches(r#"<rect class="good""#).count(), 2, "{svg}");
        assert_eq!(svg.matches(r#"<rect class="defective""#).count(), 2, "{svg}");
        // The y axis runs to the tallest bar (two images), in steps of 1.
        assert!(svg.contains(&format!(r#"y="{TOP:.2}""#)), "{svg}");
        assert!(svg.contains(r#"text-anchor="end">2</text>"#) && !svg.contains(r#"text-anchor="end">3</text>"#));
        assert_eq!([1, 5, 6, 10, 11, 105, 1000].map(count_step), [1, 1, 2, 2, 5, 50, 200]);
        // The threshold at 0.4 of the range 0.1..0.9: 3/8 of the width.
        let x = LEFT + (W - LEFT - RIGHT) * 0.375;
        assert!(svg.contains(&format!(r#"class="threshold" x1="{x:.2}""#)), "{svg}");
        assert!(!histogram("c", &good, &defective, None).contains("threshold"));
        // One distinct score, or none: still a drawable chart.
        assert!(histogram("c", &[0.5, 0.5], &[], None).contains(r#"<rect class="good""#));
        assert!(histogram("c", &[], &[], None).ends_with("</svg>\n"));
    }

    #[test]
    fn file_stems_are_safe() {
        assert_eq!(file_stem("metal_nut"), "metal_nut");
        assert_eq!(file_stem("a/b c"), "a_b_c");
        assert_eq!(file_stem(""), "class");
        assert_eq!(file_stem(".."), "class..");
    }
}
