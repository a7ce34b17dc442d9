#[pglock::advisory("job")]
fn job() -> Result<(), pglock::Error> {
    Ok(())
}

fn main() {
    let _ = job();
}
