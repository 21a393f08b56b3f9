//! `kvorum-lazyfs MOUNTPOINT BACKING_DIR [--control SOCKET]`: see the crate note.

fn main() -> anyhow::Result<()> {
    kvorum_lazyfs::cli::cli_main()
}
