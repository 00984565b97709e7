//! The simulation's pictures: a Chrome trace (opens in Perfetto or
//! `chrome://tracing`, lanes named as Ascend's profiler names the pipes) and
//! an SVG timeline with one lane per pipe.

use std::fmt::Write as _;

use super::{Event, Pipe, Report, Side};

/// The events of `r` in Chrome trace format (JSON): one process per unit
/// (`AIC`, `AIV`), one thread per pipe (`CUBE`, `MTE1`, `MTE2`, `MTE3`,
/// `FIXP`, `VECTOR`), times in µs.
pub fn chrome_trace(r: &Report) -> String {
    let mut ev = Vec::new();
    for (pid, side) in [(0, Side::Aic), (1, Side::Aiv)] {
        ev.push(serde_json::json!({
            "name": "process_name", "ph": "M", "pid": pid,
            "args": { "name": format!("{} (core 0)", side.name()) }
        }));
        for p in Pipe::ALL {
            ev.push(serde_json::json!({
                "name": "thread_name", "ph": "M", "pid": pid, "tid": p.index(),
                "args": { "name": p.name() }
            }));
        }
    }
    for e in &r.events {
        ev.push(serde_json::json!({
            "name": e.label,
            "cat": e.pipe.name(),
            "ph": "X",
            "pid": if e.side == Side::Aic { 0 } else { 1 },
            "tid": e.pipe.index(),
            "ts": e.start_ns / 1e3,
            "dur": ((e.end_ns - e.start_ns) / 1e3).max(0.0),
            "args": { "block": e.item },
        }));
    }
    serde_json::json!({
        "traceEvents": ev,
        "displayTimeUnit": "ns",
        "otherData": {
            "kernel": r.kernel, "target": r.target, "model": "amlac simulate (a prediction)"
        }
    })
    .to_string()
}

/// Fill colours of blocks 0, 1, 2, … (cycled).
const BLOCK_FILL: [&str; 4] = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1"];

/// What a lane does, written next to its name.
fn lane_role(side: Side, p: Pipe) -> &'static str {
    match (side, p) {
        (_, Pipe::Cube) => "matmul",
        (_, Pipe::Mte1) => "L1→L0A/B",
        (Side::Aic, Pipe::Mte2) => "GM→L1",
        (Side::Aiv, Pipe::Mte2) => "GM→UB",
        (_, Pipe::Fixp) => "L0C→GM",
        (_, Pipe::Mte3) => "UB→GM",
        (_, Pipe::Vector) => "softmax, rescale",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG timeline of the traced blocks of core 0: one lane per pipe that
/// did work, boxes coloured by block and labelled with the op, and a lane
/// that marks when the Cube and the Vector unit are busy at once (the
/// overlap the preload pipeline buys).
pub fn svg(r: &Report) -> String {
    let lanes: Vec<(Side, Pipe)> = [
        (Side::Aic, Pipe::Mte2),
        (Side::Aic, Pipe::Mte1),
        (Side::Aic, Pipe::Cube),
        (Side::Aic, Pipe::Fixp),
        (Side::Aic, Pipe::Mte3),
        (Side::Aiv, Pipe::Mte2),
        (Side::Aiv, Pipe::Vector),
        (Side::Aiv, Pipe::Mte3),
    ]
    .into_iter()
    .filter(|(s, p)| r.events.iter().any(|e| e.side == *s && e.pipe == *p))
    .collect();
    let t_end = r
        .events
        .iter()
        .map(|e| e.end_ns)
        .fold(0.0f64, f64::max)
        .max(1.0);
    let (left, width, lane_h, top) = (230.0, 1400.0, 34.0, 70.0);
    let x = |t: f64| left + t / t_end * width;
    let n_lanes = lanes.len() + 1;
    let height = top + lane_h * n_lanes as f64 + 60.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="11">"#,
        w = left + width + 20.0
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let blocks = r.events.iter().map(|e| e.item).max().map_or(0, |m| m + 1);
    let _ = writeln!(
        o,
        r#"<text x="10" y="22" font-size="15" font-weight="bold">{} on {} — model prediction, first {} block(s) of core 0</text>"#,
        esc(&r.kernel),
        esc(&r.target),
        blocks
    );
    let mut key = String::new();
    for b in 0..blocks {
        let _ = write!(
            key,
            r#"<tspan fill="{}" font-weight="bold">■ block {b}</tspan>  "#,
            BLOCK_FILL[b as usize % BLOCK_FILL.len()]
        );
    }
    let _ = writeln!(
        o,
        r#"<text x="10" y="42">kernel {:.1} µs, FU {:.1}%, bound by {} {}. Box colour = block: {key}</text>"#,
        r.time_ns / 1e3,
        r.fu * 100.0,
        r.bound.0.name(),
        r.bound.1.name()
    );
    for (li, (side, pipe)) in lanes.iter().enumerate() {
        let y = top + li as f64 * lane_h;
        let _ = writeln!(
            o,
            r##"<rect x="{left}" y="{y}" width="{width}" height="{h}" fill="{bg}"/><text x="10" y="{ty}"><tspan font-weight="bold">{} {}</tspan> {}</text>"##,
            side.name(),
            pipe.name(),
            lane_role(*side, *pipe),
            h = lane_h - 4.0,
            bg = if li % 2 == 0 { "#f4f4f4" } else { "#ebebeb" },
            ty = y + lane_h / 2.0 + 2.0
        );
        for e in r
            .events
            .iter()
            .filter(|e| e.side == *side && e.pipe == *pipe)
        {
            let (x0, x1) = (x(e.start_ns), x(e.end_ns));
            let w = (x1 - x0).max(0.5);
            let fill = BLOCK_FILL[e.item as usize % BLOCK_FILL.len()];
            let _ = writeln!(
                o,
                r##"<rect x="{x0:.2}" y="{y1:.1}" width="{w:.2}" height="{h}" fill="{fill}" stroke="white" stroke-width="0.3"><title>{} ({:.2} µs, block {})</title></rect>"##,
                esc(&e.label),
                (e.end_ns - e.start_ns) / 1e3,
                e.item,
                y1 = y + 2.0,
                h = lane_h - 8.0
            );
            let short = e.label.split_whitespace().next().unwrap_or("");
            if w > 7.0 * short.len() as f64 {
                let _ = writeln!(
                    o,
                    r#"<text x="{:.1}" y="{:.1}" fill="white" font-size="10">{}</text>"#,
                    x0 + 2.0,
                    y + lane_h / 2.0 + 2.0,
                    esc(short)
                );
            }
        }
    }
    // Overlap lane: Cube busy while the Vector unit is busy.
    let y = top + lanes.len() as f64 * lane_h;
    let _ = writeln!(
        o,
        r##"<rect x="{left}" y="{y}" width="{width}" height="{h}" fill="#fff7e0"/><text x="10" y="{ty}"><tspan font-weight="bold">overlap</tspan> CUBE and VECTOR busy</text>"##,
        h = lane_h - 4.0,
        ty = y + lane_h / 2.0 + 2.0
    );
    let cube = intervals(&r.events, Side::Aic, Pipe::Cube);
    let vec = intervals(&r.events, Side::Aiv, Pipe::Vector);
    let mut overlap_ns = 0.0;
    for (a0, a1) in &cube {
        for (b0, b1) in &vec {
            let (s, e) = (a0.max(*b0), a1.min(*b1));
            if e > s {
                overlap_ns += e - s;
                let _ = writeln!(
                    o,
                    r##"<rect x="{:.2}" y="{:.1}" width="{:.2}" height="{}" fill="#e15759"/>"##,
                    x(s),
                    y + 2.0,
                    (x(e) - x(s)).max(0.5),
                    lane_h - 8.0
                );
            }
        }
    }
    // Time axis.
    let ya = top + n_lanes as f64 * lane_h + 8.0;
    let step = nice_step(t_end / 1e3 / 10.0);
    let mut t = 0.0;
    while t <= t_end / 1e3 + 1e-9 {
        let xt = x(t * 1e3);
        let _ = writeln!(
            o,
            r##"<line x1="{xt:.1}" y1="{top}" x2="{xt:.1}" y2="{ya}" stroke="#999" stroke-width="0.4"/><text x="{xt:.1}" y="{:.1}" text-anchor="middle">{t:.1} µs</text>"##,
            ya + 14.0
        );
        t += step;
    }
    let _ = writeln!(
        o,
        r#"<text x="10" y="{:.1}">Cube and Vector busy at once for {:.2} µs of {:.2} µs shown. Hover a box for the op.</text>"#,
        ya + 34.0,
        overlap_ns / 1e3,
        t_end / 1e3
    );
    o.push_str("</svg>\n");
    o
}

/// Merged busy intervals of one lane.
fn intervals(events: &[Event], side: Side, pipe: Pipe) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = events
        .iter()
        .filter(|e| e.side == side && e.pipe == pipe && e.end_ns > e.start_ns)
        .map(|e| (e.start_ns, e.end_ns))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (s, e) in v {
        match out.last_mut() {
            Some(l) if s <= l.1 => l.1 = l.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Time the Cube and the Vector unit are busy at once among `events`, ns.
pub fn cube_vector_overlap_ns(events: &[Event]) -> f64 {
    let a = intervals(events, Side::Aic, Pipe::Cube);
    let b = intervals(events, Side::Aiv, Pipe::Vector);
    let mut t = 0.0;
    for (a0, a1) in &a {
        for (b0, b1) in &b {
            t += (a1.min(*b1) - a0.max(*b0)).max(0.0);
        }
    }
    t
}

fn nice_step(raw: f64) -> f64 {
    let raw = raw.max(1e-3);
    let p = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= raw {
            return m * p;
        }
    }
    10.0 * p
}
