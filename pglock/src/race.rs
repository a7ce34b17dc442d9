//! Two futures raced: the first to finish wins, the other is dropped.

use std::pin::pin;
use std::task::Poll;

/// Which of two raced futures finished first, with its output.
pub(crate) enum Either<A, B> {
    First(A),
    Second(B),
}

/// Poll `first` and `second` together and return the output of whichever finishes first
/// (`first` when both are ready at once); the other is dropped.
pub(crate) async fn race<A: Future, B: Future>(
    first: A,
    second: B,
) -> Either<A::Output, B::Output> {
    let (mut first, mut second) = (pin!(first), pin!(second));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = first.as_mut().poll(cx) {
            return Poll::Ready(Either::First(out));
        }
        match second.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(Either::Second(out)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}
