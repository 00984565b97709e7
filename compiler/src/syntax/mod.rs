//! The `.amla` front end's syntax: the pest grammar (`amla.pest`), the AST
//! ([`ast`]), and the parser ([`parse`]) that turns one into the other.
//!
//! Invariants: every AST node owns the byte [`Span`] of its source; no input
//! makes the parser panic or recurse deeper than [`MAX_DEPTH`] bracket levels
//! or expression levels (deeper input is refused with E0002).

pub mod ast;
mod parser;
mod span;

pub use parser::parse;
pub use span::Span;

std::thread_local! {
    /// True on a thread [`on_big_stack`] spawned.
    static BIG_STACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` on a thread with a stack large enough for [`MAX_DEPTH`] levels
/// of recursive descent in any build profile (the caller's thread may be a
/// 2 MiB test thread). Falls back to the current thread if spawning fails;
/// runs `f` where it is when already on such a thread (`check` parses and
/// checks on one thread).
pub(crate) fn on_big_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    const STACK: usize = 256 << 20; // reserved address space, touched lazily
    if BIG_STACK.with(|b| b.get()) {
        return f();
    }
    let cell = std::sync::Mutex::new(Some(f));
    let take = || cell.lock().ok().and_then(|mut g| g.take());
    let ran = std::thread::scope(|s| {
        let spawned = std::thread::Builder::new()
            .name("amla-front".into())
            .stack_size(STACK)
            .spawn_scoped(s, || {
                BIG_STACK.with(|b| b.set(true));
                take().map(|f| f())
            });
        match spawned {
            Ok(h) => match h.join() {
                Ok(v) => v,
                Err(payload) => std::panic::resume_unwind(payload),
            },
            Err(_) => None,
        }
    });
    match ran {
        Some(v) => v,
        None => match take() {
            Some(f) => f(),
            None => unreachable!("the closure either ran on the thread or is still here"),
        },
    }
}

/// The deepest bracket nesting, and the highest expression tree, accepted.
pub const MAX_DEPTH: u32 = 256;

#[cfg(test)]
mod tests;
