//! The panic barrier at the service boundary: a bug that panics inside a call must not cancel the
//! call silently (gRPC callers saw CANCELLED, HTTP callers an empty reply, and nothing was
//! counted). A panicking call answers `INTERNAL` naming the method and the connection, is counted
//! in `wsm_handler_panics_total`, and is logged once with its message, location and backtrace.
//!
//! The backtrace can only be taken where the panic happens, so a panic hook (installed once,
//! chaining the previous hook for every panic outside a guarded call) keeps it for the barrier.

use std::backtrace::Backtrace;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use futures_util::FutureExt;
use tonic::Status;

thread_local! {
    /// Guarded polls running on this thread (nested guards count up).
    static GUARDED: Cell<u32> = const { Cell::new(0) };
    /// What the hook saw of the last panic inside a guarded poll on this thread.
    static CAUGHT: RefCell<Option<Caught>> = const { RefCell::new(None) };
}

struct Caught {
    location: String,
    backtrace: Backtrace,
}

/// Installs the hook once per process.
pub(crate) fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) > 0 {
                let location = info
                    .location()
                    .map_or_else(|| "unknown".to_owned(), ToString::to_string);
                CAUGHT.with(|c| {
                    *c.borrow_mut() = Some(Caught {
                        location,
                        backtrace: Backtrace::force_capture(),
                    })
                });
            } else {
                previous(info);
            }
        }));
    });
}

/// Marks the current poll as guarded while it lives (also when it unwinds).
struct InGuard;

impl InGuard {
    fn enter() -> InGuard {
        GUARDED.with(|g| g.set(g.get() + 1));
        InGuard
    }
}

impl Drop for InGuard {
    fn drop(&mut self) {
        GUARDED.with(|g| g.set(g.get().saturating_sub(1)));
    }
}

/// Runs `call`; a panic in it becomes `Err(INTERNAL)` for `method` on connection `id` (empty for
/// calls on no connection), counted in `panics`.
pub async fn guard<F: Future>(
    method: &str,
    id: &str,
    panics: &AtomicU64,
    call: F,
) -> Result<F::Output, Status> {
    let mut call = std::pin::pin!(call);
    let polled = std::future::poll_fn(|cx| {
        let _in = InGuard::enter();
        call.as_mut().poll(cx)
    });
    match AssertUnwindSafe(polled).catch_unwind().await {
        Ok(output) => Ok(output),
        Err(payload) => {
            panics.fetch_add(1, Ordering::Relaxed);
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text panic".to_owned());
            let caught = CAUGHT.with(|c| c.borrow_mut().take());
            let (location, backtrace) = match caught {
                Some(c) => (c.location, c.backtrace.to_string()),
                None => ("unknown".to_owned(), "not captured".to_owned()),
            };
            let id = crate::text::excerpt(id, crate::text::SHORT);
            let on = if id.is_empty() {
                String::new()
            } else {
                format!(" for connection {id}")
            };
            tracing::error!(
                method,
                connection = %id,
                panic = %message,
                %location,
                %backtrace,
                "a call panicked{on}; answered INTERNAL, the server goes on"
            );
            Err(Status::internal(format!(
                "internal error in {method}{on}: the call failed on a defect (logged with a \
                 backtrace by this instance); it may or may not have taken effect"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_internal_naming_method_and_connection_and_is_counted() {
        install_hook();
        let panics = AtomicU64::new(0);
        let status = guard("Send", "conn-1", &panics, async {
            tokio::task::yield_now().await;
            if panics.load(Ordering::Relaxed) == 0 {
                panic!("boom");
            }
        })
        .await
        .expect_err("panicked");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(
            status.message().contains("Send for connection conn-1"),
            "{}",
            status.message()
        );
        assert_eq!(panics.load(Ordering::Relaxed), 1);
        assert_eq!(
            GUARDED.with(Cell::get),
            0,
            "the guard is left after unwinding"
        );
        let ok = guard("List", "", &panics, async { 7 }).await;
        assert_eq!(ok.expect("no panic"), 7);
    }
}
