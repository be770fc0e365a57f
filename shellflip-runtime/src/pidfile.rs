//! The pid file: always the pid of the generation that serves.
//!
//! Written atomically (a temporary file in the same directory, renamed over
//! the pid file) so a reader never sees it empty or half-written. The
//! temporary file has an unpredictable name and is created with `O_EXCL`
//! and `O_NOFOLLOW`, so nothing planted in the directory (a symlink to
//! another file) is ever written through; the rename replaces whatever is
//! at the pid file's path, a symlink included, without following it, and
//! reading or removing the file never follows a symlink either. It is written by a
//! generation when it becomes ready, and again by the old generation when a
//! restart fails. An old generation that hands over leaves the file alone
//! (its successor has already written its own pid); the generation that
//! finally stops removes it, if it still names that generation.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A pid file that could not be written or removed.
#[derive(Debug, thiserror::Error)]
#[error("pid file {}: {source}", path.display())]
pub(crate) struct PidFileError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The pid file at a configured path.
#[derive(Debug, Clone)]
pub(crate) struct PidFile {
    pub path: PathBuf,
}

impl PidFile {
    pub(crate) fn new(path: impl Into<PathBuf>) -> Self {
        PidFile { path: path.into() }
    }

    fn error(&self, source: std::io::Error) -> PidFileError {
        PidFileError {
            path: self.path.clone(),
            source,
        }
    }

    /// Replaces the file's content with `pid` and a newline, atomically.
    pub(crate) fn write(&self, pid: u32) -> Result<(), PidFileError> {
        let file_name = self.path.file_name().ok_or_else(|| {
            self.error(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path names no file",
            ))
        })?;
        let (temp, mut file) =
            create_temporary(&self.path, file_name).map_err(|e| self.error(e))?;
        let written = (|| {
            file.write_all(format!("{pid}\n").as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, &self.path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(self.error(e));
        }
        Ok(())
    }

    /// The pid the file names, if it is a regular file (not a symlink)
    /// holding one.
    pub(crate) fn read(&self) -> Option<u32> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
            .ok()?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).ok()?;
        text.trim().parse().ok()
    }

    /// Removes the file if it names `pid`. Returns whether it was removed.
    pub(crate) fn remove_if_names(&self, pid: u32) -> Result<bool, PidFileError> {
        if self.read() != Some(pid) {
            return Ok(false);
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }
}

/// Creates `.<name>.<random>.tmp` beside `path` (whose file name is
/// `name`), never opening an existing path (a planted symlink makes the
/// attempt fail, and another name is tried).
fn create_temporary(
    path: &Path,
    name: &std::ffi::OsStr,
) -> std::io::Result<(PathBuf, std::fs::File)> {
    let mut last_error = None;
    for _ in 0..16 {
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        // 64 bits nobody can guess: std seeds each `RandomState` from the
        // system's randomness, with distinct keys.
        temp_name.push(format!(
            ".{:016x}.tmp",
            RandomState::new().build_hasher().finish()
        ));
        let temp = path.with_file_name(temp_name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no free temporary name")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = PidFile::new(dir.path().join("app.pid"));
        assert_eq!(pid_file.read(), None);
        pid_file.write(41).unwrap();
        assert_eq!(std::fs::read_to_string(&pid_file.path).unwrap(), "41\n");
        pid_file.write(42).unwrap();
        assert_eq!(pid_file.read(), Some(42));
        let entries: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, vec![std::ffi::OsString::from("app.pid")]);
    }

    #[test]
    fn remove_only_when_it_names_us() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = PidFile::new(dir.path().join("app.pid"));
        assert!(!pid_file.remove_if_names(7).unwrap());
        pid_file.write(8).unwrap();
        assert!(!pid_file.remove_if_names(7).unwrap());
        assert!(pid_file.path.exists());
        assert!(pid_file.remove_if_names(8).unwrap());
        assert!(!pid_file.path.exists());
    }

    #[test]
    fn a_planted_symlink_is_never_written_through() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        // At the final path: replaced, not followed.
        let path = dir.path().join("app.pid");
        symlink(&victim, &path).unwrap();
        let pid_file = PidFile::new(&path);
        assert_eq!(pid_file.read(), None, "a symlink is not read through");
        assert!(!pid_file.remove_if_names(9).unwrap());
        pid_file.write(9).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(!std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(pid_file.read(), Some(9));
        // At every name the old scheme would have used for the temporary.
        std::fs::remove_file(&path).unwrap();
        for pid in [9, std::process::id()] {
            symlink(&victim, dir.path().join(format!(".app.pid.{pid}.tmp"))).unwrap();
        }
        pid_file.write(9).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert_eq!(pid_file.read(), Some(9));
    }

    #[test]
    fn temporary_names_differ() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = create_temporary(dir.path(), std::ffi::OsStr::new("x")).unwrap();
        let (b, _) = create_temporary(dir.path(), std::ffi::OsStr::new("x")).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn an_unwritable_directory_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = PidFile::new(dir.path().join("missing").join("app.pid"));
        let error = pid_file.write(1).unwrap_err();
        assert!(error.to_string().contains("missing/app.pid"), "{error}");
    }
}
