//! The pid file: always the pid of the generation that serves.
//!
//! Written atomically (a temporary file in the same directory, renamed over
//! the pid file) so a reader never sees it empty or half-written: by a
//! generation when it becomes ready, and again by the old generation when a
//! restart fails. An old generation that hands over leaves the file alone
//! (its successor has already written its own pid); the generation that
//! finally stops removes it, if it still names that generation.

use std::io::Write;
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
    path: PathBuf,
}

impl PidFile {
    pub(crate) fn new(path: impl Into<PathBuf>) -> Self {
        PidFile { path: path.into() }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, source: std::io::Error) -> PidFileError {
        PidFileError {
            path: self.path.clone(),
            source,
        }
    }

    /// Replaces the file's content with `pid` and a newline, atomically.
    pub(crate) fn write(&self, pid: u32) -> Result<(), PidFileError> {
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let file_name = self.path.file_name().ok_or_else(|| {
            self.error(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path names no file",
            ))
        })?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(file_name);
        temp_name.push(format!(".{pid}.tmp"));
        let temp = dir.join(temp_name);
        let written = (|| {
            let mut file = std::fs::File::create(&temp)?;
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

    /// The pid the file names, if it exists and holds one.
    pub(crate) fn read(&self) -> Option<u32> {
        std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = PidFile::new(dir.path().join("app.pid"));
        assert_eq!(pid_file.read(), None);
        pid_file.write(41).unwrap();
        assert_eq!(std::fs::read_to_string(pid_file.path()).unwrap(), "41\n");
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
        assert!(pid_file.path().exists());
        assert!(pid_file.remove_if_names(8).unwrap());
        assert!(!pid_file.path().exists());
    }

    #[test]
    fn an_unwritable_directory_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = PidFile::new(dir.path().join("missing").join("app.pid"));
        let error = pid_file.write(1).unwrap_err();
        assert!(error.to_string().contains("missing/app.pid"), "{error}");
    }
}
