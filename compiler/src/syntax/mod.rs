//! The `.amla` front end's syntax: pest grammar (`amla.pest`), AST, parser.

mod span;

pub use span::Span;
