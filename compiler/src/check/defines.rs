//! `-D NAME=VALUE` bindings of dims and consts.

use std::collections::BTreeMap;

/// Compile-time bindings from the command line: NAME → VALUE text. The text
/// is interpreted by the checker (an integer for a dim or an integer const,
/// a number for a float const); a NAME that is neither a dim nor a const of
/// the kernel is an error (E0009).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Defines {
    /// NAME → VALUE, sorted by name (a later `-D` of the same name wins).
    pub map: BTreeMap<String, String>,
}

impl Defines {
    /// No bindings.
    pub fn new() -> Defines {
        Defines::default()
    }

    /// Binds `name` to the text `value`.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.map.insert(name.into(), value.into());
    }

    /// Parses one `NAME=VALUE` argument (the value is checked later, against
    /// the kernel).
    pub fn parse_arg(arg: &str) -> Result<(String, String), String> {
        match arg.split_once('=') {
            Some((n, v)) if !n.trim().is_empty() => {
                Ok((n.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(format!("expected NAME=VALUE, got `{arg}`")),
        }
    }
}

impl FromIterator<(String, String)> for Defines {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Defines {
        Defines {
            map: iter.into_iter().collect(),
        }
    }
}
