//! Running a scope's body so that a panic inside it can be caught, cleaned up after, and resumed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::task::Poll;

/// Run a future to completion, catching a panic from any of its polls. The caller cleans up and
/// then resumes the panic with `std::panic::resume_unwind`, so nothing is swallowed.
pub async fn catch_panic<F: Future>(future: F) -> std::thread::Result<F::Output> {
    let mut future = pin!(future);
    std::future::poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(panic) => Poll::Ready(Err(panic)),
        },
    )
    .await
}
