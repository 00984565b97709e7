//! The AMLA paper's ablation as one table (see the parent module).

use crate::diag::SourceFile;
use crate::target::Target;

/// The table.
pub(crate) fn table(
    _src: &SourceFile,
    _defines: &[(String, String)],
    _target: &Target,
    _json: bool,
) -> Result<String, String> {
    Err("not yet".into())
}
