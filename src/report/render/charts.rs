//! SVG line charts for the HTML pages, drawn with plotters' SVG backend:
//! text, no fonts or images to load, so a page stays one file.

use plotters::prelude::*;

/// Colors of the series, in the order the pages use them.
pub const P50: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
/// 95th percentile and the candidate side.
pub const P95: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
/// 99th percentile and errors.
pub const P99: RGBColor = RGBColor(0xd6, 0x27, 0x28);
/// The base side of a comparison.
pub const BASE: RGBColor = RGBColor(0x7f, 0x7f, 0x7f);

/// One line.
#[derive(Debug)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Line color.
    pub color: RGBColor,
    /// (x, y) in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// What the x axis shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    /// Seconds since the stage started.
    Seconds,
    /// Percentiles on a "nines" scale: 0 is 0 %, 1 is 90 %, 2 is 99 %…
    Nines,
    /// The load multiplier of each stage.
    Multiplier,
}

/// Lines drawn over a chart's series: bounds across (an SLO's limit) and
/// marks along the x axis (the safe, peak and breaking multipliers).
#[derive(Debug, Default)]
pub struct Guides {
    /// (legend text, y): a dashed horizontal line.
    pub bounds: Vec<(String, f64)>,
    /// (label, x): a vertical line with its label at the top.
    pub marks: Vec<(String, f64)>,
}

/// Where a percentile (0–100) sits on the nines axis.
pub fn nines(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-6);
    -rest.log10()
}

fn nines_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    if p < 99.0 {
        format!("{p:.0}%")
    } else {
        let digits = (x - 2.0).round().max(0.0) as usize;
        format!("{p:.digits$}%")
    }
}

/// A line chart as an `<svg>` element, 540×270; `None` when the series
/// hold no points.
pub fn line_chart(title: &str, x_axis: XAxis, y_desc: &str, series: &[Series]) -> Option<String> {
    line_chart_with(title, x_axis, y_desc, series, &Guides::default())
}

/// [`line_chart`] with bounds and marks drawn over the series (they widen
/// the axes to stay in view).
pub fn line_chart_with(
    title: &str,
    x_axis: XAxis,
    y_desc: &str,
    series: &[Series],
    guides: &Guides,
) -> Option<String> {
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x1, mut y1) = (0f64, 0f64);
    let mut any = false;
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            x1 = x1.max(x);
            y1 = y1.max(y);
            any = true;
        }
    }
    if !any {
        return None;
    }
    let finite = |v: &&(String, f64)| v.1.is_finite();
    for (_, y) in guides.bounds.iter().filter(finite) {
        y1 = y1.max(*y);
    }
    for (_, x) in guides.marks.iter().filter(finite) {
        x1 = x1.max(*x);
    }
    let x1 = match x_axis {
        XAxis::Seconds => x1.max(1.0),
        XAxis::Nines => x1.clamp(1.0, 6.0).ceil(),
        XAxis::Multiplier => (x1 * 1.1).max(2.0),
    };
    let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
    let mut svg = String::new();
    let drawn = draw(&mut svg, title, x_axis, y_desc, series, guides, (x1, y1));
    if let Err(e) = drawn {
        tracing::warn!(error = %e, chart = title, "a chart could not be drawn");
        return None;
    }
    Some(svg)
}

fn draw(
    svg: &mut String,
    title: &str,
    x_axis: XAxis,
    y_desc: &str,
    series: &[Series],
    guides: &Guides,
    (x1, y1): (f64, f64),
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, (540, 270)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..x1, 0f64..y1)?;
    let x_label = |x: &f64| match x_axis {
        // Short stages get tenths, so ticks do not repeat.
        XAxis::Seconds if x1 < 5.0 => format!("{x:.1}"),
        XAxis::Seconds => format!("{x:.0}"),
        XAxis::Nines => nines_label(*x),
        XAxis::Multiplier => format!("{x:.0}x"),
    };
    chart
        .configure_mesh()
        .x_desc(match x_axis {
            XAxis::Seconds => "seconds since the stage started",
            XAxis::Nines => "percentile",
            XAxis::Multiplier => "load multiplier",
        })
        .x_labels(match x_axis {
            XAxis::Seconds => 10,
            XAxis::Nines => x1 as usize + 1,
            XAxis::Multiplier => (x1 as usize + 1).min(12),
        })
        .x_label_formatter(&x_label)
        .y_desc(y_desc)
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .draw()?;
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    let guide = RGBColor(0x55, 0x55, 0x55);
    for (name, y) in guides.bounds.iter().filter(|b| b.1.is_finite()) {
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, *y), (x1, *y)],
                6,
                4,
                guide.stroke_width(1),
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], guide.stroke_width(1))
            });
    }
    for (name, x) in guides.marks.iter().filter(|m| m.1.is_finite()) {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(*x, 0.0), (*x, y1 * 0.93)],
            guide.mix(0.6).stroke_width(1),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            name.clone(),
            (*x, y1 * 0.99),
            ("sans-serif", 12).into_font().color(&guide),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(0xcc, 0xcc, 0xcc))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_put_the_tail_on_equal_steps() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(3.0), "99.9%");
    }

    #[test]
    fn a_chart_is_an_svg_with_its_lines_and_legend() {
        let svg = line_chart(
            "latency",
            XAxis::Seconds,
            "ms",
            &[Series {
                name: "p99".into(),
                color: P99,
                points: vec![(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)],
            }],
        )
        .expect("a chart");
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains("<polyline"));
        assert!(
            svg.matches("<text").count() > 5 && svg.contains("p99"),
            "labels and legend"
        );
        assert!(line_chart("empty", XAxis::Seconds, "ms", &[]).is_none());
    }

    #[test]
    fn bounds_and_marks_are_drawn_and_widen_the_axes() {
        let guides = Guides {
            bounds: vec![("p95 bound 250 ms".into(), 250.0)],
            marks: vec![("safe".into(), 5.0), ("breaking".into(), 10.0)],
        };
        let svg = line_chart_with(
            "capacity",
            XAxis::Multiplier,
            "ms",
            &[Series {
                name: "p95".into(),
                color: P95,
                points: vec![(1.0, 20.0), (5.0, 90.0)],
            }],
            &guides,
        )
        .expect("a chart");
        for text in ["p95 bound 250 ms", "safe", "breaking", "10x"] {
            assert!(svg.contains(text), "{text} in the chart");
        }
    }
}
