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
    /// A file named `name` holding `text`.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> SourceFile {
        SourceFile {
            name: name.into(),
            text: text.into(),
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

    fn to_codespan(&self, len: usize) -> cs::Diagnostic<()> {
        // Clamp spans so a bad span can never make the renderer fail.
        let clamp = |s: Span| s.start.min(len)..s.end.min(len).max(s.start.min(len));
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
    let files = SimpleFile::new(file.name.as_str(), file.text.as_str());
    let config = term::Config::default();
    let mut out = String::new();
    for d in diags {
        let cd = d.to_codespan(file.text.len());
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
    let files = SimpleFile::new(file.name.as_str(), file.text.as_str());
    let config = term::Config::default();
    for d in diags {
        let cd = d.to_codespan(file.text.len());
        if term::emit_to_write_style(&mut lock, &config, &files, &cd).is_err() {
            eprintln!("error[{}]: {}", d.code, d.message);
        }
    }
}
