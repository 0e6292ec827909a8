//! A small file system of the test's own (tmpfs; needs root), for disks
//! that fill up or turn read-only.

use std::path::PathBuf;

/// A tmpfs of `size` mounted on a fresh folder, unmounted when dropped.
pub struct SmallDisk {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(size: &str) -> SmallDisk {
        let uid = std::process::Command::new("id")
            .arg("-u")
            .output()
            .expect("id -u");
        assert!(
            String::from_utf8_lossy(&uid.stdout).trim() == "0",
            "this test mounts a small tmpfs and needs root (CI runs the suite as root); \
             run it as root, e.g. `sudo -E cargo test --release --test it`"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).expect("mount point");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount");
        assert!(mounted.success(), "mounting a {size} tmpfs failed");
        SmallDisk { path, _dir: dir }
    }

    /// Frees space the way an operator would: the file system grows.
    pub fn grow(&self, size: &str) {
        let grown = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("remount");
        assert!(grown.success(), "growing the tmpfs failed");
    }

    /// Makes the file system read-only, as a snapshot or a read-only
    /// volume mount would be.
    pub fn remount_read_only(&self) {
        let done = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.path)
            .status()
            .expect("remount");
        assert!(done.success(), "remounting the tmpfs read-only failed");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}
