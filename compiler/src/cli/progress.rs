//! A spinner on stderr for commands that take more than a second: hidden at
//! first, shown (on a terminal only) once the second has passed, with the
//! current stage as its message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget};

/// The spinner of one command.
pub struct Progress {
    bar: ProgressBar,
    done: Arc<AtomicBool>,
}

impl Progress {
    /// Starts the (still hidden) spinner.
    pub fn start() -> Progress {
        let bar = ProgressBar::hidden();
        let done = Arc::new(AtomicBool::new(false));
        let (b, d) = (bar.clone(), done.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            if !d.load(Ordering::Acquire) {
                b.set_draw_target(ProgressDrawTarget::stderr());
                b.enable_steady_tick(Duration::from_millis(120));
            }
        });
        Progress { bar, done }
    }

    /// Shows `stage` as the current step.
    pub fn stage(&self, stage: &str) {
        self.bar.set_message(stage.to_string());
    }

    /// Removes the spinner.
    pub fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.bar.finish_and_clear();
    }
}
