#[pglock::advisory("job", timout = "1s")]
async fn job() -> Result<(), pglock::Error> {
    Ok(())
}

fn main() {
    let _ = job();
}
