//! The kvorum-lazyfs program, built in the test package so that integration tests get its path
//! from cargo (`CARGO_BIN_EXE_lazyfs-test`).

fn main() -> anyhow::Result<()> {
    kvorum_lazyfs::cli::cli_main()
}
