//! The helper libraries (cronium.py, cronium.js, cronium.bash) are written once into a shared
//! directory `cronium-lib-<euid>-<hash>` under the work base and reused by later runs, while each
//! run's `.cronium/` holds only its data. A shared directory that is not safely ours is never
//! used: the run falls back to its own copy of the libraries and still succeeds.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::*;
use cronium_protocol::RunStatus;
use serde_json::json;

const LIBS: [(&str, &str); 3] = [
    ("cronium.py", include_str!("../src/helpers/cronium.py")),
    ("cronium.js", include_str!("../src/helpers/cronium.js")),
    ("cronium.bash", include_str!("../src/helpers/cronium.bash")),
];
const DATA_FILES: &str = "event.json input.json variables.json";
const FALLBACK_FILES: &str =
    "cronium.bash cronium.js cronium.py event.json input.json variables.json";
/// What the runner says on stderr when it does not use the shared directory.
const NOT_SHARING: &str = "not sharing the helper libraries";

/// A bash script that reports where everything is and uses the helpers from all three languages.
fn probe() -> String {
    let py = python();
    format!(
        r#"set -e
echo "data=$(ls -A "$CRONIUM_HELPER_DIR" | tr '\n' ' ' | sed 's/ $//')"
echo "helper_dir=$CRONIUM_HELPER_DIR"
echo "bash_env=$BASH_ENV"
echo "pythonpath=${{PYTHONPATH%%:*}}"
echo "nodepath=${{NODE_PATH%%:*}}"
echo "py_file=$({py} -c 'import cronium; print(cronium.__file__)')"
echo "node_file=$({NODE} -e 'console.log(require.resolve("cronium"))')"
echo "bash_input=$(cronium.input name)"
echo "py_input=$({py} -c 'import cronium; print(cronium.input()["name"])')"
echo "node_input=$({NODE} -e 'console.log(require("cronium").input().name)')"
cronium.setVariable from_bash 1
{py} -c 'import cronium; cronium.setVariable("from_py", cronium.getVariable("from_bash") + 1)'
{NODE} -e 'const c = require("cronium"); c.setVariable("from_node", c.getVariable("from_py") + 1); c.output({{done: true}})'
"#
    )
}

struct Probe {
    out: RunOutput,
}

impl Probe {
    fn run(scratch: &Scratch) -> Probe {
        let out = run(
            scratch,
            &script("bash", &probe(), json!({})),
            &context(json!({"input": {"name": "bob"}})),
        );
        assert_eq!(
            out.finished().status,
            RunStatus::Succeeded,
            "{:?}\n{}",
            out.events,
            out.stderr
        );
        for lang in ["bash", "py", "node"] {
            assert_eq!(self::value(&out, &format!("{lang}_input=")), "bob");
        }
        assert_eq!(
            out.variables(),
            vec![
                ("from_bash".to_string(), json!(1)),
                ("from_py".to_string(), json!(2)),
                ("from_node".to_string(), json!(3)),
            ]
        );
        assert_eq!(out.last_output(), Some(json!({"done": true})));
        Probe { out }
    }

    fn value(&self, prefix: &str) -> String {
        value(&self.out, prefix)
    }

    fn path(&self, prefix: &str) -> PathBuf {
        PathBuf::from(self.value(prefix))
    }

    /// The directory every interpreter was pointed at for the libraries (checked to agree).
    fn lib_dir(&self) -> PathBuf {
        let dir = self.path("pythonpath=");
        assert_eq!(self.path("nodepath="), dir);
        assert_eq!(self.path("bash_env="), dir.join("cronium.bash"));
        assert_eq!(self.path("py_file="), dir.join("cronium.py"));
        assert_eq!(self.path("node_file="), dir.join("cronium.js"));
        dir
    }

    fn helper_dir(&self) -> PathBuf {
        let dir = self.path("helper_dir=");
        assert_eq!(dir.file_name().unwrap(), ".cronium");
        let run_dir = dir.parent().unwrap().file_name().unwrap();
        assert!(
            run_dir.to_string_lossy().starts_with("cronium-run-"),
            "{}",
            dir.display()
        );
        dir
    }

    fn shared(&self) -> bool {
        !self.out.stderr.contains(NOT_SHARING)
    }
}

fn value(out: &RunOutput, prefix: &str) -> String {
    out.stdout()
        .iter()
        .find_map(|l| l.strip_prefix(prefix).map(str::to_string))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in {:?}", out.stdout()))
}

fn euid() -> u32 {
    unsafe { libc::geteuid() }
}

/// The three libraries are there with exactly the shipped content, as regular files.
fn assert_libraries(dir: &Path) {
    for (name, content) in LIBS {
        let path = dir.join(name);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file(), "{} is not a regular file", path.display());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), content, "{name}");
    }
}

/// Entries of a shared library directory, without Python's bytecode cache.
fn lib_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "__pycache__")
        .collect();
    names.sort();
    names
}

/// Runs once to learn this build's shared directory name, then removes that directory.
fn lib_name(scratch: &Scratch) -> String {
    let probe = Probe::run(scratch);
    let dir = probe.lib_dir();
    std::fs::remove_dir_all(&dir).unwrap();
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

/// A directory outside the work base holding libraries that must never run.
fn evil_libs(scratch: &Scratch, name: &str) -> PathBuf {
    let dir = scratch.path(name);
    std::fs::create_dir(&dir).unwrap();
    write_evil(&dir);
    dir
}

fn write_evil(dir: &Path) {
    std::fs::write(dir.join("cronium.bash"), "echo PWNED-bash\n").unwrap();
    std::fs::write(dir.join("cronium.py"), "print('PWNED-py')\n").unwrap();
    std::fs::write(dir.join("cronium.js"), "console.log('PWNED-node');\n").unwrap();
}

fn assert_not_pwned(out: &RunOutput) {
    assert!(
        !out.stdout().iter().any(|l| l.contains("PWNED")),
        "{:?}",
        out.stdout()
    );
}

fn assert_evil_untouched(dir: &Path) {
    assert_eq!(
        std::fs::read_to_string(dir.join("cronium.bash")).unwrap(),
        "echo PWNED-bash\n"
    );
    assert_eq!(
        lib_entries(dir),
        vec!["cronium.bash", "cronium.js", "cronium.py"]
    );
}

/// The run fell back to its own copy of the libraries in `.cronium/`.
fn assert_fallback(probe: &Probe) {
    assert!(
        !probe.shared(),
        "no fallback diagnostic: {}",
        probe.out.stderr
    );
    assert_eq!(probe.lib_dir(), probe.helper_dir());
    assert_eq!(probe.value("data="), FALLBACK_FILES);
    assert_not_pwned(&probe.out);
}

#[test]
fn runs_share_one_library_directory_and_keep_only_data_per_run() {
    let scratch = Scratch::new();
    let first = Probe::run(&scratch);
    let second = Probe::run(&scratch);
    assert!(first.shared(), "{}", first.out.stderr);
    assert!(second.shared(), "{}", second.out.stderr);

    let lib = first.lib_dir();
    assert_eq!(second.lib_dir(), lib);
    assert_eq!(scratch.lib_dirs(), vec![lib.clone()]);
    let name = lib.file_name().unwrap().to_string_lossy().into_owned();
    let hash = name
        .strip_prefix(&format!("cronium-lib-{}-", euid()))
        .unwrap_or_else(|| panic!("{name}"));
    assert!(
        hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}"
    );
    let meta = std::fs::symlink_metadata(&lib).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.uid(), euid());
    assert_eq!(meta.mode() & 0o777, 0o700);
    assert_libraries(&lib);
    assert_eq!(
        lib_entries(&lib),
        vec!["cronium.bash", "cronium.js", "cronium.py"],
        "no temporary files left"
    );

    // Each run had its own `.cronium/`, holding only the run's data.
    assert_ne!(first.helper_dir(), second.helper_dir());
    assert_eq!(first.value("data="), DATA_FILES);
    assert_eq!(second.value("data="), DATA_FILES);

    // A third run keeps the files as they are instead of rewriting them.
    let inodes: Vec<u64> = LIBS
        .iter()
        .map(|(n, _)| std::fs::metadata(lib.join(n)).unwrap().ino())
        .collect();
    let third = Probe::run(&scratch);
    assert_eq!(third.lib_dir(), lib);
    let after: Vec<u64> = LIBS
        .iter()
        .map(|(n, _)| std::fs::metadata(lib.join(n)).unwrap().ino())
        .collect();
    assert_eq!(inodes, after);
    scratch.assert_clean();
}

#[test]
fn symlink_in_place_of_the_library_directory_is_not_used() {
    let scratch = Scratch::new();
    let name = lib_name(&scratch);
    let evil = evil_libs(&scratch, "evil");
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = scratch.work().join(&name);
    std::os::unix::fs::symlink(&evil, &link).unwrap();

    let probe = Probe::run(&scratch);
    assert_fallback(&probe);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_evil_untouched(&evil);
    scratch.assert_clean();
}

#[test]
fn library_directory_open_to_others_is_not_used() {
    let scratch = Scratch::new();
    let name = lib_name(&scratch);
    let dir = scratch.work().join(&name);
    std::fs::create_dir(&dir).unwrap();
    write_evil(&dir);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();

    let probe = Probe::run(&scratch);
    assert_fallback(&probe);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().mode() & 0o7777,
        0o777,
        "left as found"
    );
    assert_evil_untouched(&dir);
    scratch.assert_clean();
}

#[test]
fn library_directory_of_another_user_is_not_used() {
    if euid() != 0 {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let scratch = Scratch::new();
    let name = lib_name(&scratch);
    let dir = scratch.work().join(&name);
    std::fs::create_dir(&dir).unwrap();
    write_evil(&dir);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();

    let probe = Probe::run(&scratch);
    assert_fallback(&probe);
    assert_evil_untouched(&dir);
    scratch.assert_clean();
}

#[test]
fn work_base_writable_by_others_is_shared_only_with_the_sticky_bit() {
    let scratch = Scratch::new();
    std::fs::set_permissions(scratch.work(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let probe = Probe::run(&scratch);
    assert_fallback(&probe);
    assert_eq!(scratch.lib_dirs(), Vec::<PathBuf>::new());
    scratch.assert_clean();

    std::fs::set_permissions(scratch.work(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let probe = Probe::run(&scratch);
    assert!(probe.shared(), "{}", probe.out.stderr);
    assert_eq!(scratch.lib_dirs(), vec![probe.lib_dir()]);
    assert_eq!(probe.value("data="), DATA_FILES);
    scratch.assert_clean();
}

#[test]
fn wrong_library_content_in_the_shared_directory_is_replaced() {
    let scratch = Scratch::new();
    let lib = Probe::run(&scratch).lib_dir();
    // Wrong content of the same length, a truncated file, and a symlink to the evil copy.
    let evil = evil_libs(&scratch, "evil");
    let py = lib.join("cronium.py");
    let same_len = "#".repeat(LIBS[0].1.len() - 1) + "\n";
    std::fs::remove_file(&py).unwrap();
    std::fs::write(&py, same_len + "print('PWNED-py')\n").unwrap();
    let js = lib.join("cronium.js");
    std::fs::remove_file(&js).unwrap();
    std::fs::write(&js, &LIBS[1].1[..LIBS[1].1.len() / 2]).unwrap();
    let bash = lib.join("cronium.bash");
    std::fs::remove_file(&bash).unwrap();
    std::os::unix::fs::symlink(evil.join("cronium.bash"), &bash).unwrap();

    let probe = Probe::run(&scratch);
    assert!(probe.shared(), "{}", probe.out.stderr);
    assert_eq!(probe.lib_dir(), lib);
    assert_eq!(probe.value("data="), DATA_FILES);
    assert_not_pwned(&probe.out);
    assert_libraries(&lib);
    assert_eq!(
        lib_entries(&lib),
        vec!["cronium.bash", "cronium.js", "cronium.py"]
    );
    assert_evil_untouched(&evil);
    scratch.assert_clean();
}

#[test]
fn sweeper_keeps_library_directories_except_old_ones_of_other_builds() {
    let scratch = Scratch::new();
    let current = Probe::run(&scratch).lib_dir();
    let make = |name: &str, age: Duration| {
        let dir = scratch.work().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("cronium.py"), b"x").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::File::open(&dir)
            .unwrap()
            .set_modified(SystemTime::now() - age)
            .unwrap();
        dir
    };
    let day = Duration::from_secs(24 * 3600);
    let uid = euid();
    std::fs::File::open(&current)
        .unwrap()
        .set_modified(SystemTime::now() - 30 * day)
        .unwrap();
    let old_build = make(&format!("cronium-lib-{uid}-0000000000000000"), 8 * day);
    let recent_build = make(&format!("cronium-lib-{uid}-1111111111111111"), 6 * day);
    let other_user = make("cronium-lib-4242-0000000000000000", 30 * day);
    if uid == 0 {
        std::os::unix::fs::chown(&other_user, Some(65534), Some(65534)).unwrap();
    }

    let inode = std::fs::metadata(current.join("cronium.py")).unwrap().ino();
    // The first run swept a minute ago or more, so the next one sweeps again.
    std::fs::File::options()
        .write(true)
        .open(scratch.work().join(format!("{SWEEP_STAMP_PREFIX}{uid}")))
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(120))
        .unwrap();

    let probe = Probe::run(&scratch);
    assert!(probe.shared(), "{}", probe.out.stderr);
    assert_eq!(probe.lib_dir(), current);
    assert_libraries(&current);
    assert_eq!(
        std::fs::metadata(current.join("cronium.py")).unwrap().ino(),
        inode,
        "the current library dir was removed or rewritten"
    );
    assert!(!old_build.exists(), "old library dir of another build kept");
    assert!(
        recent_build.exists(),
        "recent library dir of another build removed"
    );
    assert!(other_user.exists(), "another user's library dir removed");
    // Used now, so its age restarts (the sweeper of another build must keep it).
    let age = SystemTime::now()
        .duration_since(std::fs::metadata(&current).unwrap().modified().unwrap())
        .unwrap_or_default();
    assert!(age < day, "current library dir not touched: {age:?}");
    scratch.assert_clean();
}

#[test]
fn a_relative_work_base_still_gives_the_script_working_helpers() {
    let scratch = Scratch::new();
    let payload_path = scratch.path("payload.tgz");
    std::fs::write(
        &payload_path,
        script(
            "bash",
            "cronium.output who \"$(cronium.input who)\"\necho \"lib=$BASH_ENV\"\n",
            serde_json::json!({}),
        ),
    )
    .unwrap();
    let ctx_path = scratch.path("context.json");
    std::fs::write(
        &ctx_path,
        context(serde_json::json!({"input": {"who": "rel"}})).to_string(),
    )
    .unwrap();
    let out = std::process::Command::new(RUNNER)
        .current_dir(scratch.root.path())
        .args([
            "run",
            "payload.tgz",
            "--context",
            "context.json",
            "--work-base",
            "work",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{events}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(events.contains(r#""who":"rel""#), "{events}");
    let lib = scratch.work().canonicalize().unwrap();
    assert!(
        events.contains(&format!("lib={}", lib.display())),
        "helpers must be found by absolute path: {events}"
    );
    scratch.assert_clean();
}
