//! Running a scope's body so that a panic inside it can be caught, cleaned up after, and resumed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// A future whose panics are caught: see [`catch_panic`].
    ///
    /// A struct rather than an `async fn`: an `async fn` keeps its argument in its state and
    /// pins a second copy of it, so the body (a function's whole body, for an attribute) would
    /// take twice its size, and more again in each `async fn` around it.
    pub struct CatchPanic<F> {
        #[pin]
        future: F,
    }
}

/// Run a future to completion, catching a panic from any of its polls. The caller cleans up and
/// then resumes the panic with `std::panic::resume_unwind`, so nothing is swallowed.
pub fn catch_panic<F: Future>(future: F) -> CatchPanic<F> {
    CatchPanic { future }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.project().future;
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}
