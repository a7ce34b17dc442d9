#[pglock::advisory("job", timeout = )]
async fn job() -> Result<(), pglock::Error> {
    Ok(())
}

fn main() {
    // No "cannot find function" here: the function is kept next to the error.
    let _ = job();
}
