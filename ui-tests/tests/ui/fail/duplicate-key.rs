#[pglock::advisory("job", timeout = "1s", timeout = "2s")]
async fn job() -> Result<(), pglock::Error> {
    Ok(())
}

#[pglock::advisory("job", shared, shared)]
async fn twice() -> Result<(), pglock::Error> {
    Ok(())
}

fn main() {}
