//! Bad flags are refused before anything is built or started, naming the flag and the value.

use std::process::Command;

#[test]
fn bad_servers_flag_names_the_value() {
    let out = Command::new(env!("CARGO_BIN_EXE_cronium-bench-remote"))
        .args(["--no-build", "ssh", "--servers", "1,abc"])
        .output()
        .expect("run the benchmark binary");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--servers: `abc` is not a number of servers"),
        "{err}"
    );
}
