//! Host calibration (see the parent module).

use crate::diag::SourceFile;
use crate::target::Target;

/// Measures the host.
pub(crate) fn probe_host(_src: &SourceFile) -> Result<String, String> {
    Err("not yet".into())
}

/// Predicted against measured.
pub(crate) fn calibrate(_src: &SourceFile, _t: &Target, _json: bool) -> Result<String, String> {
    Err("not yet".into())
}
