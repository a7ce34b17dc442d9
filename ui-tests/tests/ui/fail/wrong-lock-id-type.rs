#[pglock::advisory(1.5)]
async fn job() -> Result<(), pglock::Error> {
    Ok(())
}

struct Tenant;

#[pglock::advisory(Tenant)]
async fn not_an_id() -> Result<(), pglock::Error> {
    Ok(())
}

fn main() {}
