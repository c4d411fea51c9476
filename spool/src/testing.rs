//! Helpers for tests of the spool and of what runs in its transaction (the rules' commit hook):
//! compiled for the spool's own tests and, behind the `testing` feature, for crates that test
//! against a real spool. Production builds leave it out.

/// A tmpfs of `bytes` mounted on a temporary directory, unmounted on drop: a disk that really
/// fills (SQLite's ENOSPC), for full-disk tests. Needs root, as the end-to-end full-disk tests
/// do (`tests/run` runs as root on CI).
pub struct Tmpfs(pub tempfile::TempDir);

impl Tmpfs {
    pub fn mount(bytes: u64) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(mounted, "mounting a tmpfs failed: this test needs root");
        Self(dir)
    }

    /// Free bytes, as statvfs says.
    pub fn free(&self) -> u64 {
        crate::limits::free_on_disk(&self.0.path().join("spool.db"))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}
