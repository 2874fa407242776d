//! What an admin sees when a command fails several layers down: one line,
//! `bootserver: error: ` and then each cause once, and a failing exit status.

mod common;

use common::Workdir;

/// The message of a failed command's stderr, checked to be one line that
/// names no cause twice.
fn one_line_error(stderr: &str) -> String {
    let line = stderr.trim_end();
    assert!(!line.contains('\n'), "not one line:\n{stderr}");
    let message = line
        .strip_prefix("bootserver: error: ")
        .unwrap_or_else(|| panic!("no `bootserver: error: ` prefix: {line}"));
    let causes: Vec<&str> = message.split(": ").map(str::trim).collect();
    for (i, cause) in causes.iter().enumerate() {
        assert!(
            !causes[i + 1..].contains(cause),
            "`{cause}` is said twice: {message}"
        );
    }
    message.to_string()
}

#[test]
fn a_missing_file_is_named_once_with_its_reason() {
    let wd = Workdir::new();
    let missing = wd.tmp.path().join("nospec.toml");
    let e = one_line_error(&wd.fails(&[
        "slice",
        "create",
        "pl_demo",
        "--rspec",
        missing.to_str().unwrap(),
    ]));
    assert_eq!(
        e,
        format!(
            "reading {}: No such file or directory (os error 2)",
            missing.display()
        )
    );

    // The root metadata for a first publish: its error names the file and
    // also keeps the system's error as its source.
    let root = wd.tmp.path().join("root.json");
    let e = one_line_error(&wd.fails(&[
        "repo",
        "publish",
        wd.tmp.path().to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ]));
    assert!(e.starts_with("publishing "), "{e}");
    assert!(e.contains(&root.display().to_string()), "{e}");
    assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");
}

#[test]
fn a_config_that_cannot_be_written_says_the_node_is_registered_once() {
    let wd = Workdir::new();
    let out = wd.tmp.path().join("no-such-dir/n1.toml");
    let e = one_line_error(&wd.fails(&[
        "node",
        "add",
        "n1.example.org",
        "--site",
        "demo",
        "-o",
        out.to_str().unwrap(),
    ]));
    assert!(e.starts_with("node 1 is registered"), "{e}");
    assert!(e.contains(&out.display().to_string()), "{e}");
    assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");
    // It is registered, and its config can be written again.
    let out = wd.tmp.path().join("n1.toml");
    wd.ok(&["node", "config", "1", "-o", out.to_str().unwrap()]);
    config::NodeConfig::load(&out).unwrap();
}

#[test]
fn a_malformed_rspec_is_one_line_with_its_place() {
    let wd = Workdir::new();
    let rspec = wd.tmp.path().join("rspec.toml");
    std::fs::write(&rspec, "# resources\ncpu_share = \"lots\"\n").unwrap();
    let e = one_line_error(&wd.fails(&[
        "slice",
        "create",
        "pl_demo",
        "--rspec",
        rspec.to_str().unwrap(),
    ]));
    assert!(
        e.starts_with(&format!("{}:2:13: invalid type", rspec.display())),
        "{e}"
    );

    std::fs::write(&rspec, "cpu_share = 0\n").unwrap();
    let e = one_line_error(&wd.fails(&[
        "slice",
        "create",
        "pl_demo",
        "--rspec",
        rspec.to_str().unwrap(),
    ]));
    assert_eq!(
        e,
        format!(
            "{}: cpu_share 0 is out of range (1 to 10000)",
            rspec.display()
        )
    );
    // Nothing was created.
    assert_eq!(wd.json(&["slice", "list"]), serde_json::json!([]));
}

#[test]
fn an_unknown_node_is_named_once() {
    let wd = Workdir::new();
    assert_eq!(
        one_line_error(&wd.fails(&["node", "show", "n9"])),
        "no node `n9`"
    );
    assert_eq!(
        one_line_error(&wd.fails(&["node", "state", "42", "debug"])),
        "no node `42`"
    );
    wd.ok(&["slice", "create", "pl_demo"]);
    wd.add_node("n1.example.org");
    // One unknown node in the list: nobody is added.
    let e = one_line_error(&wd.fails(&["slice", "add-node", "pl_demo", "n1", "n9"]));
    assert_eq!(e, "no node `n9`");
    let slice = wd.json(&["slice", "show", "pl_demo"]);
    assert_eq!(slice["nodes"], serde_json::json!([]), "{slice:#}");
}

/// rusqlite's error says `file is not a database` and its source says
/// `Error code 26: file is not a database`: the line repeats it until
/// `floor::report::one_line` also leaves out the parts of a cause that the
/// line already holds.
#[test]
fn a_damaged_database_is_one_line() {
    let wd = Workdir::new();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(wd.dir.join(format!("registry.db{suffix}")));
    }
    std::fs::write(wd.dir.join("registry.db"), vec![0x5a; 8192]).unwrap();
    let e = one_line_error(&wd.fails(&["node", "list"]));
    assert!(e.starts_with("database "), "{e}");
    assert!(e.contains("registry.db"), "{e}");
}
