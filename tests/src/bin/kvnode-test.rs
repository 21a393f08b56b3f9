//! The test suite's kvnode: the same program as `kvnode`, built in the test package with the
//! `test-faults` feature of `kvorum-node`, so that integration tests get its path from cargo
//! (`CARGO_BIN_EXE_kvnode-test`). It reads the planted faults (`KVORUM_FAULT_*`, see
//! `kvorum_node::faults`) from its environment once, at start; every fault is off unless its
//! variable is set. `kvnode` itself is built without the feature and has none of them.

fn main() -> std::process::ExitCode {
    kvorum_node::launch::main_with_faults(kvorum_node::faults::Faults::from_env())
}
