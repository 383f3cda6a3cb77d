//! The file-system abstraction under the store, and its real-file implementation.
//!
//! Paths are relative to the store root, with `/` as separator and `""` for the root itself.
//! The trait is small on purpose: it is what the crash model in `mem.rs` has to get right.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::LogError;
use crate::format::ReadAt;

/// An entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name (no path).
    pub name: String,
    /// Whether the entry is a directory.
    pub is_dir: bool,
}

/// A file system: the store's only way to touch storage, so tests can swap in a crash model.
pub trait Backend: Send + Sync + 'static {
    /// Opens the file at `path`, creating it (empty) if `create` and it does not exist.
    fn open_file(&self, path: &str, create: bool) -> io::Result<Arc<dyn BackendFile>>;
    /// Creates the directory at `path` if it does not exist (its parent must exist).
    fn create_dir(&self, path: &str) -> io::Result<()>;
    /// Lists the directory at `path`.
    fn list_dir(&self, path: &str) -> io::Result<Vec<DirEntry>>;
    /// Removes the file at `path`.
    fn remove_file(&self, path: &str) -> io::Result<()>;
    /// Removes the empty directory at `path`.
    fn remove_dir(&self, path: &str) -> io::Result<()>;
    /// Renames a file or directory; the target must not exist.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes creations, renames and removals of entries in the directory at `path` durable.
    fn sync_dir(&self, path: &str) -> io::Result<()>;
    /// Whether nothing outlives the process anyway (an in-memory store), so that a write is as
    /// durable as it will ever be once made: appends then complete at once, without waiting
    /// for a sync thread.
    fn volatile(&self) -> bool {
        false
    }
}

/// An open file of a [`Backend`], used only through positioned reads and writes.
#[allow(clippy::len_without_is_empty)] // Files are measured, never asked if empty.
pub trait BackendFile: Send + Sync + fmt::Debug {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` from byte `pos`; fails if the file is too short.
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// Writes all of `data` at byte `pos`, extending the file if needed.
    fn write_all_at(&self, data: &[u8], pos: u64) -> io::Result<()>;
    /// Truncates or zero-extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes every write so far, and the length, durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Where the first byte at or after `from` that may be non-zero lies: past it lie only
    /// holes (never written, read as zeros) up to the returned position, or to the end when it
    /// returns the length. Lets recovery skip a segment's preallocated tail without reading
    /// it. Without that knowledge, `from` itself.
    fn next_data(&self, from: u64) -> io::Result<u64> {
        Ok(from)
    }
}

/// Lets the scanning code in `format` read a backend file.
pub(crate) struct FileSource<'a>(pub &'a dyn BackendFile);

impl ReadAt for FileSource<'_> {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, pos)
    }

    fn next_data(&self, from: u64) -> io::Result<u64> {
        self.0.next_data(from)
    }
}

/// Real files under a root directory.
pub struct FileBackend {
    root: PathBuf,
    /// Held for the backend's lifetime: a second process on the same directory would corrupt
    /// the logs, so the flock makes it fail at open instead.
    _lock: File,
}

impl fmt::Debug for FileBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileBackend")
            .field("root", &self.root)
            .finish()
    }
}

/// Name of the lock file in the store root.
const LOCK_FILE: &str = "LOCK";

impl FileBackend {
    /// Uses (creating if needed) the directory `root`, and locks it against other processes.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, LogError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| with_path(e, &root))?;
        let lock_path = root.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| with_path(e, &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LogError::Io(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is in use by another process", root.display()),
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(with_path(e, &lock_path).into()),
        }
        Ok(Self { root, _lock: lock })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, relative: &str) -> PathBuf {
        if relative.is_empty() {
            self.root.clone()
        } else {
            self.root.join(relative)
        }
    }
}

/// Adds the path to an I/O error, which otherwise says only "No such file or directory".
fn with_path(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

impl Backend for FileBackend {
    fn open_file(&self, path: &str, create: bool) -> io::Result<Arc<dyn BackendFile>> {
        let full = self.path(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(&full)
            .map_err(|e| with_path(e, &full))?;
        Ok(Arc::new(RealFile { file, path: full }))
    }

    fn create_dir(&self, path: &str) -> io::Result<()> {
        let full = self.path(path);
        match std::fs::create_dir(&full) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && full.is_dir() => Ok(()),
            other => other.map_err(|e| with_path(e, &full)),
        }
    }

    fn list_dir(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        let full = self.path(path);
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&full).map_err(|e| with_path(e, &full))? {
            let entry = entry?;
            // Names that are not UTF-8 are not ours; skipping them is the safe choice.
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            entries.push(DirEntry {
                name,
                is_dir: entry.file_type()?.is_dir(),
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    fn remove_file(&self, path: &str) -> io::Result<()> {
        let full = self.path(path);
        std::fs::remove_file(&full).map_err(|e| with_path(e, &full))
    }

    fn remove_dir(&self, path: &str) -> io::Result<()> {
        let full = self.path(path);
        std::fs::remove_dir(&full).map_err(|e| with_path(e, &full))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (from, to) = (self.path(from), self.path(to));
        if to.exists() {
            return Err(with_path(io::ErrorKind::AlreadyExists.into(), &to));
        }
        std::fs::rename(&from, &to).map_err(|e| with_path(e, &from))
    }

    fn sync_dir(&self, path: &str) -> io::Result<()> {
        let full = self.path(path);
        File::open(&full)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| with_path(e, &full))
    }
}

/// An open real file.
struct RealFile {
    file: File,
    path: PathBuf,
}

impl fmt::Debug for RealFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RealFile")
            .field("path", &self.path)
            .finish()
    }
}

impl BackendFile for RealFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.file
            .read_exact_at(buf, pos)
            .map_err(|e| with_path(e, &self.path))
    }

    fn write_all_at(&self, data: &[u8], pos: u64) -> io::Result<()> {
        self.file
            .write_all_at(data, pos)
            .map_err(|e| with_path(e, &self.path))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len).map_err(|e| with_path(e, &self.path))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data().map_err(|e| with_path(e, &self.path))
    }

    #[cfg(target_os = "linux")]
    fn next_data(&self, from: u64) -> io::Result<u64> {
        use std::os::fd::AsRawFd;
        let Ok(offset) = libc::off_t::try_from(from) else {
            return Ok(from);
        };
        // SAFETY: the descriptor is owned by `self.file`, open for the whole call; lseek
        // neither reads nor writes memory of ours.
        let found = unsafe { libc::lseek(self.file.as_raw_fd(), offset, libc::SEEK_DATA) };
        if found >= 0 {
            return Ok(u64::try_from(found).unwrap_or(from).max(from));
        }
        match io::Error::last_os_error() {
            // Nothing but holes from `from` to the end.
            error if error.raw_os_error() == Some(libc::ENXIO) => self.len(),
            // A file system without SEEK_DATA: no knowledge.
            error if error.raw_os_error() == Some(libc::EINVAL) => Ok(from),
            error => Err(with_path(error, &self.path)),
        }
    }
}
