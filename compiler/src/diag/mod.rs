//! Diagnostics: what went wrong, where, with a stable [`Code`].
//!
//! Every user mistake reachable from a `.amla` file or a `-D` flag becomes a
//! [`Diagnostic`] with a primary span (never a panic). Rendering goes through
//! **codespan-reporting**: it is a small, stable, widely used renderer that
//! draws multi-label source snippets with `file:line:col` headers, keeps no
//! global state, and writes plain or coloured output through termcolor, so
//! tests render the same text the terminal shows, minus colour.

mod codes;

pub use codes::Code;

use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term;
use codespan_reporting::term::termcolor::{ColorChoice, StandardStream};

use crate::syntax::Span;

/// A source file: its display name (a path) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Shown in diagnostics (`name:line:col`).
    pub name: String,
    /// The whole text.
    pub text: String,
}

impl SourceFile {
    /// A file named `name` holding `text`. A leading UTF-8 byte-order mark
    /// is dropped and a lone CR (classic Mac line end) becomes LF, so CR, LF
    /// and CRLF all end lines, in the parser and in diagnostics alike (CR →
    /// LF keeps every byte offset).
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> SourceFile {
        let mut text: String = text.into();
        if let Some(rest) = text.strip_prefix('\u{feff}') {
            text = rest.to_string();
        }
        if text.contains('\r') {
            let b = text.as_bytes();
            let fixed: Vec<u8> = b
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    if c == b'\r' && b.get(i + 1) != Some(&b'\n') {
                        b'\n'
                    } else {
                        c
                    }
                })
                .collect();
            // Replacing one ASCII byte by another keeps the text UTF-8.
            text = String::from_utf8(fixed).unwrap_or(text);
        }
        SourceFile {
            name: name.into(),
            text,
        }
    }
}

/// A labelled span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// What about it (may be empty).
    pub message: String,
}

/// One error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Its stable code.
    pub code: Code,
    /// The headline.
    pub message: String,
    /// The main place.
    pub primary: Label,
    /// Related places.
    pub secondary: Vec<Label>,
    /// Extra lines (`= note: …`).
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// An error with `code`, headline `message`, and a primary label at `span`.
    pub fn new(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            primary: Label {
                span,
                message: String::new(),
            },
            secondary: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Sets the primary label's text.
    pub fn label(mut self, message: impl Into<String>) -> Diagnostic {
        self.primary.message = message.into();
        self
    }

    /// Adds a secondary label.
    pub fn secondary(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.secondary.push(Label {
            span,
            message: message.into(),
        });
        self
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    fn spans(&self) -> Vec<Span> {
        std::iter::once(self.primary.span)
            .chain(self.secondary.iter().map(|l| l.span))
            .collect()
    }

    fn to_codespan(&self, len: usize, map: &dyn Fn(usize) -> usize) -> cs::Diagnostic<()> {
        // Clamp spans so a bad span can never make the renderer fail.
        let clamp = |s: Span| {
            let (a, b) = (map(s.start.min(len)), map(s.end.min(len)));
            a..b.max(a)
        };
        let mut labels = vec![
            cs::Label::primary((), clamp(self.primary.span)).with_message(&self.primary.message),
        ];
        labels.extend(
            self.secondary
                .iter()
                .map(|l| cs::Label::secondary((), clamp(l.span)).with_message(&l.message)),
        );
        cs::Diagnostic::error()
            .with_code(self.code.to_string())
            .with_message(&self.message)
            .with_labels(labels)
            .with_notes(self.notes.clone())
    }
}

/// Renders `diags` against `file` as plain text (no colour), the form tests
/// snapshot.
pub fn render_plain(file: &SourceFile, diags: &[Diagnostic]) -> String {
    let config = term::Config::default();
    let mut out = String::new();
    for d in diags {
        let cut = CutText::new(&file.text, &d.spans());
        let files = SimpleFile::new(file.name.as_str(), cut.text.as_str());
        let cd = d.to_codespan(file.text.len(), &|p| cut.map(p));
        if term::emit_to_string(&mut out, &config, &files, &cd).is_err() {
            out.push_str(&format!("error[{}]: {}\n", d.code, d.message));
        }
    }
    out
}

/// Writes `diags` to stderr, coloured only when stderr is a terminal.
pub fn emit_stderr(file: &SourceFile, diags: &[Diagnostic]) {
    use std::io::IsTerminal;
    let choice = if std::io::stderr().is_terminal() {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    let stream = StandardStream::stderr(choice);
    let mut lock = stream.lock();
    let config = term::Config::default();
    for d in diags {
        let cut = CutText::new(&file.text, &d.spans());
        let files = SimpleFile::new(file.name.as_str(), cut.text.as_str());
        let cd = d.to_codespan(file.text.len(), &|p| cut.map(p));
        if term::emit_to_write_style(&mut lock, &config, &files, &cd).is_err() {
            eprintln!("error[{}]: {}", d.code, d.message);
        }
    }
}

/// Longest source line shown whole in a diagnostic, in bytes; longer lines
/// are cut to a window around the first label on them.
pub const MAX_SHOWN_LINE: usize = 200;

/// The text a diagnostic is rendered against: every line longer than
/// [`MAX_SHOWN_LINE`] cut to a window (`… ` and ` …` mark the cuts) around
/// the first label on it, with the map from original byte offsets to
/// offsets in the cut text.
struct CutText {
    text: String,
    /// Per cut line: original `[start, end)`, window `[w0, w1)`, where the
    /// window starts in `text`, and where the line ends in `text`.
    cuts: Vec<[usize; 6]>,
}

impl CutText {
    fn new(src: &str, spans: &[Span]) -> CutText {
        if src.lines().all(|l| l.len() <= MAX_SHOWN_LINE) {
            return CutText {
                text: src.to_string(),
                cuts: Vec::new(),
            };
        }
        let floor = |mut p: usize| {
            while !src.is_char_boundary(p) {
                p -= 1;
            }
            p
        };
        let mut text = String::new();
        let mut cuts = Vec::new();
        let mut start = 0;
        for line in src.split_inclusive('\n') {
            let end = start + line.len();
            let body_end = start + line.trim_end_matches(['\n', '\r']).len();
            if body_end - start <= MAX_SHOWN_LINE {
                text.push_str(line);
            } else {
                let center = spans
                    .iter()
                    .map(|s| s.start)
                    .find(|&p| p >= start && p < body_end)
                    .unwrap_or(start);
                let w0 = floor(center.saturating_sub(MAX_SHOWN_LINE / 3).max(start));
                let w1 = floor((w0 + MAX_SHOWN_LINE).min(body_end));
                if w0 > start {
                    text.push_str("… ");
                }
                let at = text.len();
                text.push_str(&src[w0..w1]);
                if w1 < body_end {
                    text.push_str(" …");
                }
                text.push_str(&src[body_end..end]);
                cuts.push([start, end, w0, w1, at, text.len()]);
            }
            start = end;
        }
        CutText { text, cuts }
    }

    /// Where original byte offset `p` is in the cut text.
    fn map(&self, p: usize) -> usize {
        let mut shift: isize = 0;
        for &[start, end, w0, w1, at, new_end] in &self.cuts {
            if p < start {
                break;
            }
            if p < end {
                return at + p.clamp(w0, w1) - w0;
            }
            shift = new_end as isize - end as isize;
        }
        (p as isize + shift).max(0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_around_the_label() {
        let long = format!("let x = {};\nfoo bar\n", "1 + ".repeat(50_000));
        let at = long.find("foo").unwrap();
        let src = SourceFile::new("t.amla", long.clone());
        let d = Diagnostic::new(Code::ALL[0], Span::new(at, at + 3), "bad foo").label("here");
        let out = render_plain(&src, &[d]);
        assert!(out.len() < 2000, "{}", out.len());
        assert!(out.contains("foo bar") && out.contains("here"), "{out}");
        // A label inside the long line: the window holds it, the rest is cut.
        let mid = 100_000;
        let d = Diagnostic::new(Code::ALL[0], Span::new(mid, mid + 1), "bad").label("this");
        let out = render_plain(&src, &[d]);
        assert!(
            out.len() < 2000 && out.contains('…') && out.contains("this"),
            "{out}"
        );
    }

    #[test]
    fn bom_is_dropped_and_every_line_end_ends_a_line() {
        let s = SourceFile::new("t", "\u{feff}// a\rkernel\r\nx\ny");
        assert_eq!(s.text, "// a\nkernel\r\nx\ny");
    }
}
