//! A recorder of (unit, name, start, end) events, written as Chrome / Perfetto
//! trace JSON (the "Trace Event Format": complete events, `ph: "X"`).
//!
//! Invariants: events carry nanoseconds from the launch start; each core is a
//! process (`pid` = core) and each unit a thread (`tid` = unit code: 0 cube,
//! 1 + n vector n), named by metadata events. The JSON is hand-written and
//! every string is escaped.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use crate::units::UnitKind;

/// One timed event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// Core index.
    pub core: u32,
    /// The unit.
    pub unit: UnitKind,
    /// What ran (`matmul`, `copy gm->l1`, `wait_flag 3`, `item 5`, …).
    pub name: String,
    /// Pipe or category (`cube`, `mte2`, `flag_wait`, `item`, …).
    pub category: &'static str,
    /// Start, nanoseconds from the launch start.
    pub start_ns: u64,
    /// End, nanoseconds from the launch start.
    pub end_ns: u64,
}

/// The events of one launch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// Events, sorted by start time.
    pub events: Vec<TraceEvent>,
}

fn escape(s: &str, out: &mut String) {
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

impl Trace {
    /// Builds a trace from unsorted events.
    pub fn new(mut events: Vec<TraceEvent>) -> Self {
        events.sort_by_key(|e| (e.start_ns, e.core, e.unit.code()));
        Trace { events }
    }

    /// The Chrome / Perfetto JSON document (timestamps in microseconds).
    pub fn to_chrome_json(&self) -> String {
        let mut s = String::from("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
        let mut first = true;
        let mut sep = |s: &mut String| {
            if !first {
                s.push_str(",\n");
            }
            first = false;
        };
        let mut named: Vec<(u32, UnitKind)> =
            self.events.iter().map(|e| (e.core, e.unit)).collect();
        named.sort_by_key(|&(c, u)| (c, u.code()));
        named.dedup();
        let mut cores: Vec<u32> = named.iter().map(|&(c, _)| c).collect();
        cores.dedup();
        for c in cores {
            sep(&mut s);
            let _ = write!(
                s,
                "{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{c},\"tid\":0,\"args\":{{\"name\":\"core {c}\"}}}}"
            );
        }
        for (c, u) in named {
            sep(&mut s);
            let _ = write!(
                s,
                "{{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":{c},\"tid\":{},\"args\":{{\"name\":\"{u}\"}}}}",
                u.code()
            );
        }
        for e in &self.events {
            sep(&mut s);
            s.push_str("{\"ph\":\"X\",\"name\":\"");
            escape(&e.name, &mut s);
            s.push_str("\",\"cat\":\"");
            escape(e.category, &mut s);
            let dur = e.end_ns.saturating_sub(e.start_ns);
            let _ = write!(
                s,
                "\",\"pid\":{},\"tid\":{},\"ts\":{}.{:03},\"dur\":{}.{:03}}}",
                e.core,
                e.unit.code(),
                e.start_ns / 1000,
                e.start_ns % 1000,
                dur / 1000,
                dur % 1000
            );
        }
        s.push_str("\n]}\n");
        s
    }

    /// Writes [`Trace::to_chrome_json`] to `path`.
    pub fn write_chrome_json(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.to_chrome_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chrome_json_shape_and_escaping() {
        let t = Trace::new(vec![
            TraceEvent {
                core: 1,
                unit: UnitKind::Vector(0),
                name: "wait \"flag\" 3".into(),
                category: "flag_wait",
                start_ns: 2500,
                end_ns: 4000,
            },
            TraceEvent {
                core: 0,
                unit: UnitKind::Cube,
                name: "matmul".into(),
                category: "cube",
                start_ns: 1000,
                end_ns: 1999,
            },
        ]);
        assert_eq!(t.events[0].name, "matmul");
        let j = t.to_chrome_json();
        assert!(j.starts_with("{\"displayTimeUnit\""));
        assert!(j.contains("\"name\":\"wait \\\"flag\\\" 3\""), "{j}");
        assert!(j.contains("\"ts\":1.000,\"dur\":0.999"), "{j}");
        assert!(j.contains("\"ts\":2.500,\"dur\":1.500"), "{j}");
        assert!(
            j.contains("\"thread_name\",\"pid\":1,\"tid\":1,\"args\":{\"name\":\"vector0\"}"),
            "{j}"
        );
        // Balanced braces and brackets (no string contains them here).
        let opens = j.matches('{').count();
        assert_eq!(opens, j.matches('}').count());
        assert_eq!(j.matches('[').count(), j.matches(']').count());
        assert_eq!(j.matches("\"ph\":\"X\"").count(), 2);
    }
}
