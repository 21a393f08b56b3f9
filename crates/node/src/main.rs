//! `kvnode`: one node of a kvorum cluster. See `kvorum_node::cli`.

fn main() -> std::process::ExitCode {
    kvorum_node::launch::main()
}
