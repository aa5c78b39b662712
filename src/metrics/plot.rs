//! ROC and precision-recall curves as small standalone SVG files, written by
//! hand (a plotting crate would weigh more than the whole metrics module).
//! Both axes run from 0 to 1.

use std::fmt::Write;

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
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + x.clamp(0.0, 1.0) * pw;
    let sy = |y: f64| TOP + (1.0 - y.clamp(0.0, 1.0)) * ph;
    let mut s = String::new();
    // `write!` into a String cannot fail.
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    for i in 0..=5 {
        let v = i as f64 / 5.0;
        let (x, y) = (sx(v), sy(v));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            sy(0.0),
            sy(1.0),
            sx(0.0),
            sx(1.0)
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{v:.1}</text><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.1}</text>"#,
            sy(0.0) + 16.0,
            sx(0.0) - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
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
    if diagonal {
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
            let _ = write!(path, "{}{:.2},{:.2}", if k == 0 { "M" } else { " L" }, sx(x), sy(y));
        }
        let _ = writeln!(
            s,
            r#"<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.8"/>"#
        );
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

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_is_well_formed_svg() {
        let pts = [(0.0, 0.0), (0.5, 0.9), (1.0, 1.0)];
        let svg = chart(
            "bottle <ROC>",
            "FPR",
            "TPR",
            &[Series { label: "image & pixel", points: &pts }],
            true,
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("bottle &lt;ROC&gt;") && svg.contains("image &amp; pixel"));
        assert!(svg.contains("M60.00,350.00 L260.00,71.00 L460.00,40.00"), "{svg}");
    }

    #[test]
    fn file_stems_are_safe() {
        assert_eq!(file_stem("metal_nut"), "metal_nut");
        assert_eq!(file_stem("a/b c"), "a_b_c");
        assert_eq!(file_stem(""), "class");
        assert_eq!(file_stem(".."), "class..");
    }
}
