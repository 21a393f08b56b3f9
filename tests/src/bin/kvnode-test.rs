//! The kvnode program, built in the test package so that integration tests get its path from
//! cargo (`CARGO_BIN_EXE_kvnode-test`) and build it with the same features as everything else.
//! It is compiled with the `stale-reads` fault, which stays off unless
//! `KVORUM_FAULT_STALE_READS=1` is set.

fn main() -> std::process::ExitCode {
    kvorum_node::launch::main()
}
