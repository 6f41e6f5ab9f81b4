//! Skipping a test whose service is missing, and finding the Python virtualenv: shared by the
//! root crate's tests (`tests/common`) and celery-core's (`#[path]`-included there).

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Whether tests must fail, rather than skip, when a service is missing.
pub fn services_required() -> bool {
    std::env::var("CELERY_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Reports a missing service: a skip, or a failure under `CELERY_TEST_REQUIRE_SERVICES=1`.
///
/// The line is written to the process's standard error itself: libtest captures what
/// `eprintln!` prints (and shows it only for failures), so a skipped test would read as a plain
/// `ok`.
pub fn skip(test: &str, reason: &str) {
    if services_required() {
        panic!("{test}: {reason} (CELERY_TEST_REQUIRE_SERVICES=1)");
    }
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {reason}");
}

/// The python of the virtualenv `tests/python/ensure_venv.sh` creates under `repo` (installing
/// celery from PyPI the first time); run once per test binary.
pub fn ensure_venv(repo: &Path) -> Result<PathBuf, String> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let script = repo.join("tests/python/ensure_venv.sh");
            let output = std::process::Command::new("bash")
                .arg(&script)
                .output()
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            if !output.status.success() {
                return Err(format!(
                    "{} failed: {}",
                    script.display(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
            let stdout = String::from_utf8_lossy(&output.stdout);
            stdout
                .lines()
                .last()
                .map(|line| line.trim().into())
                .ok_or_else(|| format!("{} printed no python path", script.display()))
        })
        .clone()
}
