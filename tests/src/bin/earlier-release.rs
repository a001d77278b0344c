//! Builds the earlier release the upgrade tests start from (see `integration_tests::earlier`),
//! once: `scripts/test` runs this before nextest, so the tests never wait for the build.
fn main() -> anyhow::Result<()> {
    let rev = integration_tests::earlier::earlier_release();
    let (bin, built) = integration_tests::earlier::earlier_release_bin(&rev)?;
    match built {
        Some(secs) => eprintln!("earlier release {rev} built in {secs} s: {}", bin.display()),
        None => eprintln!("earlier release {rev}: cached at {}", bin.display()),
    }
    Ok(())
}
