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
    /// Whether [`Backend::sync_all_files`] is available and trusted.
    fn can_sync_all_files(&self) -> bool {
        false
    }
    /// Makes the data of every file written so far durable at once (`syncfs`): a checkpoint
    /// over many logs then costs one call and one file-system commit instead of one
    /// `fdatasync` (and commit) per segment. Only where `can_sync_all_files` says so.
    fn sync_all_files(&self) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
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
    /// the logs, so the flock makes it fail at open instead. Also the descriptor `syncfs`
    /// is called on.
    lock: File,
    /// Whether `syncfs` on the root's file system is trusted (see [`syncfs_trusted`]).
    syncfs: bool,
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
        let syncfs = syncfs_trusted(&lock);
        Ok(Self { root, lock, syncfs })
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

/// Whether `syncfs` on the file system holding `file` both covers every file's data and
/// reports write-back errors: Linux 5.8 and later (earlier kernels return success whatever
/// happened), on a local journaling file system known to commit and flush in `sync_fs`
/// (ext4, XFS, Btrfs). Anywhere else the store syncs file by file.
#[cfg(target_os = "linux")]
fn syncfs_trusted(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    const EXT4: i64 = 0xEF53;
    const XFS: i64 = 0x5846_5342;
    const BTRFS: i64 = 0x9123_683E;
    // SAFETY: `fstatfs` only writes into the zeroed struct passed to it; the descriptor is
    // open for the whole call.
    let statfs = unsafe {
        let mut statfs: libc::statfs = std::mem::zeroed();
        if libc::fstatfs(file.as_raw_fd(), &mut statfs) != 0 {
            return false;
        }
        statfs
    };
    #[allow(clippy::unnecessary_cast)] // `f_type`'s type differs between targets.
    let local = matches!(statfs.f_type as i64, EXT4 | XFS | BTRFS);
    local
        && std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .is_ok_and(|release| kernel_at_least(release.trim(), (5, 8)))
}

#[cfg(not(target_os = "linux"))]
fn syncfs_trusted(_file: &File) -> bool {
    false
}

/// Whether a kernel release such as `6.1.0-18-amd64` is `minimum` or later.
fn kernel_at_least(release: &str, minimum: (u32, u32)) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let mut number = || parts.next().and_then(|p| p.parse::<u32>().ok());
    match (number(), number()) {
        (Some(major), Some(minor)) => (major, minor) >= minimum,
        _ => false,
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

    fn can_sync_all_files(&self) -> bool {
        self.syncfs
    }

    #[cfg(target_os = "linux")]
    fn sync_all_files(&self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        if !self.syncfs {
            return Err(io::ErrorKind::Unsupported.into());
        }
        // SAFETY: the descriptor is owned by `self.lock`, open for the whole call.
        if unsafe { libc::syncfs(self.lock.as_raw_fd()) } == 0 {
            Ok(())
        } else {
            Err(with_path(io::Error::last_os_error(), &self.root))
        }
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

#[cfg(test)]
mod tests {
    use super::{Backend, FileBackend, kernel_at_least};

    #[test]
    fn syncfs_is_used_only_where_trusted_and_then_succeeds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = FileBackend::new(dir.path()).expect("backend");
        let file = backend.open_file("f", true).expect("open");
        file.write_all_at(b"data", 0).expect("write");
        match backend.sync_all_files() {
            Ok(()) => assert!(backend.can_sync_all_files()),
            Err(error) => {
                assert!(!backend.can_sync_all_files(), "{error}");
                assert_eq!(error.kind(), std::io::ErrorKind::Unsupported);
            }
        }
    }

    #[test]
    fn kernel_releases_compare_by_major_then_minor() {
        assert!(kernel_at_least("5.8.0", (5, 8)));
        assert!(kernel_at_least("6.1.0-18-amd64", (5, 8)));
        assert!(kernel_at_least(
            "5.15.153.1-microsoft-standard-WSL2",
            (5, 8)
        ));
        assert!(!kernel_at_least("5.4.0-150-generic", (5, 8)));
        assert!(!kernel_at_least("4.19.0", (5, 8)));
        assert!(!kernel_at_least("", (5, 8)));
        assert!(!kernel_at_least("weird", (5, 8)));
    }
}
