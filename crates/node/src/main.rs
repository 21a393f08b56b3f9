//! `kvnode`: one node of a kvorum cluster. The program (flags, configuration, start and stop)
//! is `kvorum_node::launch`.

fn main() -> std::process::ExitCode {
    kvorum_node::launch::main()
}
