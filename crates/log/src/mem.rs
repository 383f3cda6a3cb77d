//! In-memory file systems: [`MemBackend`] for `--in-memory` servers, and [`CrashBackend`], the
//! same with a crash model for tests.
//!
//! The crash model follows the assumptions in `docs/storage-format.md`: a file's contents survive
//! a crash only as of its last `sync_data`, and a directory entry (creation, rename, removal)
//! only as of the last `sync_dir` of its directory. Directories are inodes, so a renamed
//! directory carries its contents along, as on a real file system.
//!
//! Those two calls are thus the only points where what a crash leaves changes: a test can have
//! [`CrashBackend`] record the durable image after each of them
//! ([`CrashBackend::record_durable_images`]) and recover from every state a workload went
//! through. File contents are shared copy-on-write between a file system and its images, so an
//! image costs only the files synced after it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::backend::{Backend, BackendFile, DirEntry};

/// Bound on remembered dirty ranges per file before they are merged into one span.
const DIRTY_RANGES_MAX: usize = 64;

const ROOT_DIR: u64 = 0;

#[derive(Debug, Default)]
struct FileData {
    /// Shared with durable images until written to (`Arc::make_mut`); owned otherwise.
    live: Arc<Vec<u8>>,
    /// Contents as of the last sync (only kept when the file system tracks durability); shared
    /// with the durable images taken since, copied by the next sync.
    durable: Arc<Vec<u8>>,
    /// Byte ranges written since the last sync, so a sync copies only what changed.
    dirty: Vec<Range<usize>>,
}

#[derive(Debug, Default)]
struct FileNode {
    data: Mutex<FileData>,
}

#[derive(Clone, Debug)]
enum Node {
    File(Arc<FileNode>),
    Dir(u64),
}

#[derive(Debug, Default)]
struct DirData {
    live: BTreeMap<String, Node>,
    /// Entries as of the last `sync_dir` (only kept when tracking durability).
    durable: BTreeMap<String, Node>,
}

#[derive(Debug, Default)]
struct Namespace {
    dirs: HashMap<u64, DirData>,
    dir_id_next: u64,
}

impl Namespace {
    fn new() -> Self {
        let mut dirs = HashMap::new();
        dirs.insert(ROOT_DIR, DirData::default());
        Self {
            dirs,
            dir_id_next: ROOT_DIR + 1,
        }
    }

    /// Splits `path` into its parent directory's id and its last component.
    fn parent_of<'p>(&self, path: &'p str) -> io::Result<(u64, &'p str)> {
        let (parent, name) = match path.rsplit_once('/') {
            Some((parent, name)) => (self.dir_id(parent)?, name),
            None => (ROOT_DIR, path),
        };
        if name.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty path"));
        }
        Ok((parent, name))
    }

    fn dir_id(&self, path: &str) -> io::Result<u64> {
        let mut id = ROOT_DIR;
        for part in path.split('/').filter(|part| !part.is_empty()) {
            match self.dirs.get(&id).and_then(|dir| dir.live.get(part)) {
                Some(Node::Dir(child)) => id = *child,
                Some(Node::File(_)) => return Err(not_a_directory(path)),
                None => return Err(not_found(path)),
            }
        }
        Ok(id)
    }

    fn dir(&self, id: u64) -> io::Result<&DirData> {
        self.dirs.get(&id).ok_or_else(|| not_found("directory"))
    }

    fn dir_mut(&mut self, id: u64) -> io::Result<&mut DirData> {
        self.dirs.get_mut(&id).ok_or_else(|| not_found("directory"))
    }

    /// Copies the durable state of directory `old_id` (and everything durable under it) into
    /// `into`, as the disk would show it after a crash.
    fn rebuild_durable(&self, old_id: u64, into: &mut Namespace, new_id: u64) {
        let Some(old) = self.dirs.get(&old_id) else {
            return;
        };
        let mut live = BTreeMap::new();
        for (name, node) in &old.durable {
            let copied = match node {
                Node::File(file) => {
                    // Shared, not copied: each side copies the bytes when it first writes.
                    let durable = Arc::clone(&file.data.lock().durable);
                    Node::File(Arc::new(FileNode {
                        data: Mutex::new(FileData {
                            live: Arc::clone(&durable),
                            durable,
                            dirty: Vec::new(),
                        }),
                    }))
                }
                Node::Dir(child) => {
                    let child_new = into.dir_id_next;
                    into.dir_id_next += 1;
                    into.dirs.insert(child_new, DirData::default());
                    self.rebuild_durable(*child, into, child_new);
                    Node::Dir(child_new)
                }
            };
            live.insert(name.clone(), copied);
        }
        let durable = live.clone();
        into.dirs.insert(new_id, DirData { live, durable });
    }
}

fn not_found(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{what}: not found"))
}

fn not_a_directory(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotADirectory,
        format!("{what}: not a directory"),
    )
}

fn crashed() -> io::Error {
    io::Error::other("the simulated machine crashed; this handle is gone")
}

/// The shared state of an in-memory file system.
#[derive(Debug)]
struct MemFs {
    namespace: Mutex<Namespace>,
    /// Whether to keep the durable state (CrashBackend) or not (MemBackend).
    track_durability: bool,
    /// Bumped by a crash: handles from before it fail, as their process died.
    generation: AtomicU64,
    /// Makes every `sync_data` fail, to test the failed-log path.
    fail_syncs: AtomicBool,
    /// Whether each sync records the durable image it leaves (see `recorder`): read first, so
    /// that a sync pays nothing more when not recording.
    recording: AtomicBool,
    /// The durable images recorded, oldest first. A sync holds this lock from before it changes
    /// the durable state until its image is pushed, so the images follow the order of the syncs
    /// and each one is pushed before its sync returns.
    images: Mutex<Vec<Namespace>>,
}

impl MemFs {
    fn new(track_durability: bool, namespace: Namespace) -> Arc<Self> {
        Arc::new(Self {
            namespace: Mutex::new(namespace),
            track_durability,
            generation: AtomicU64::new(0),
            fail_syncs: AtomicBool::new(false),
            recording: AtomicBool::new(false),
            images: Mutex::new(Vec::new()),
        })
    }

    /// When recording, the image list, locked: to be held across a change of the durable state
    /// and passed to [`MemFs::record`] after it. Taken before any other lock of the file system.
    fn recorder(&self) -> Option<parking_lot::MutexGuard<'_, Vec<Namespace>>> {
        if !self.recording.load(Ordering::SeqCst) {
            return None;
        }
        let images = self.images.lock();
        // Checked again under the lock: recording may have stopped meanwhile.
        self.recording.load(Ordering::SeqCst).then_some(images)
    }

    /// Pushes the durable image as of now, if `recorder` is recording.
    fn record(&self, recorder: Option<parking_lot::MutexGuard<'_, Vec<Namespace>>>) {
        if let Some(mut images) = recorder {
            images.push(self.durable_image());
        }
    }

    fn durable_image(&self) -> Namespace {
        let namespace = self.namespace.lock();
        let mut image = Namespace {
            dirs: HashMap::new(),
            dir_id_next: ROOT_DIR + 1,
        };
        namespace.rebuild_durable(ROOT_DIR, &mut image, ROOT_DIR);
        image
    }

    fn file_node(&self, path: &str) -> io::Result<Arc<FileNode>> {
        let namespace = self.namespace.lock();
        let (parent, name) = namespace.parent_of(path)?;
        match namespace.dir(parent)?.live.get(name) {
            Some(Node::File(file)) => Ok(Arc::clone(file)),
            Some(Node::Dir(_)) => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                path.to_string(),
            )),
            None => Err(not_found(path)),
        }
    }
}

fn open_file(fs: &Arc<MemFs>, path: &str, create: bool) -> io::Result<Arc<dyn BackendFile>> {
    let mut namespace = fs.namespace.lock();
    let (parent, name) = namespace.parent_of(path)?;
    let dir = namespace.dir_mut(parent)?;
    let node = match dir.live.get(name) {
        Some(Node::File(file)) => Arc::clone(file),
        Some(Node::Dir(_)) => {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                path.to_string(),
            ));
        }
        None if create => {
            let file = Arc::new(FileNode::default());
            dir.live
                .insert(name.to_string(), Node::File(Arc::clone(&file)));
            file
        }
        None => return Err(not_found(path)),
    };
    Ok(Arc::new(MemFile {
        fs: Arc::clone(fs),
        node,
        generation: fs.generation.load(Ordering::SeqCst),
    }))
}

fn create_dir(fs: &MemFs, path: &str) -> io::Result<()> {
    let mut namespace = fs.namespace.lock();
    let (parent, name) = namespace.parent_of(path)?;
    match namespace.dir(parent)?.live.get(name) {
        Some(Node::Dir(_)) => return Ok(()),
        Some(Node::File(_)) => return Err(io::Error::new(io::ErrorKind::AlreadyExists, path)),
        None => {}
    }
    let id = namespace.dir_id_next;
    namespace.dir_id_next += 1;
    namespace.dirs.insert(id, DirData::default());
    namespace
        .dir_mut(parent)?
        .live
        .insert(name.to_string(), Node::Dir(id));
    Ok(())
}

fn list_dir(fs: &MemFs, path: &str) -> io::Result<Vec<DirEntry>> {
    let namespace = fs.namespace.lock();
    let id = namespace.dir_id(path)?;
    Ok(namespace
        .dir(id)?
        .live
        .iter()
        .map(|(name, node)| DirEntry {
            name: name.clone(),
            is_dir: matches!(node, Node::Dir(_)),
        })
        .collect())
}

fn remove(fs: &MemFs, path: &str, want_dir: bool) -> io::Result<()> {
    let mut namespace = fs.namespace.lock();
    let (parent, name) = namespace.parent_of(path)?;
    let node = namespace
        .dir(parent)?
        .live
        .get(name)
        .cloned()
        .ok_or_else(|| not_found(path))?;
    match (&node, want_dir) {
        (Node::File(_), false) => {}
        (Node::Dir(id), true) => {
            if !namespace.dir(*id)?.live.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::DirectoryNotEmpty,
                    path.to_string(),
                ));
            }
            // A crash before the parent is synced brings the directory back, so its data must
            // stay around when durability is tracked.
            if !fs.track_durability {
                namespace.dirs.remove(id);
            }
        }
        (Node::File(_), true) => return Err(not_a_directory(path)),
        (Node::Dir(_), false) => {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                path.to_string(),
            ));
        }
    }
    namespace.dir_mut(parent)?.live.remove(name);
    Ok(())
}

fn rename(fs: &MemFs, from: &str, to: &str) -> io::Result<()> {
    let mut namespace = fs.namespace.lock();
    let (from_parent, from_name) = namespace.parent_of(from)?;
    let (to_parent, to_name) = namespace.parent_of(to)?;
    if namespace.dir(to_parent)?.live.contains_key(to_name) {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, to.to_string()));
    }
    let node = namespace
        .dir_mut(from_parent)?
        .live
        .remove(from_name)
        .ok_or_else(|| not_found(from))?;
    namespace
        .dir_mut(to_parent)?
        .live
        .insert(to_name.to_string(), node);
    Ok(())
}

fn sync_dir(fs: &MemFs, path: &str) -> io::Result<()> {
    let recorder = fs.recorder();
    {
        let mut namespace = fs.namespace.lock();
        let id = namespace.dir_id(path)?;
        if !fs.track_durability {
            return Ok(());
        }
        let dir = namespace.dir_mut(id)?;
        dir.durable = dir.live.clone();
    }
    fs.record(recorder);
    Ok(())
}

/// An open in-memory file.
struct MemFile {
    fs: Arc<MemFs>,
    node: Arc<FileNode>,
    generation: u64,
}

impl fmt::Debug for MemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemFile")
            .field("len", &self.node.data.lock().live.len())
            .finish()
    }
}

impl MemFile {
    fn check_alive(&self) -> io::Result<()> {
        if self.fs.generation.load(Ordering::SeqCst) != self.generation {
            return Err(crashed());
        }
        Ok(())
    }
}

fn to_usize(value: u64) -> io::Result<usize> {
    usize::try_from(value).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too large"))
}

impl BackendFile for MemFile {
    fn len(&self) -> io::Result<u64> {
        self.check_alive()?;
        Ok(self.node.data.lock().live.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.check_alive()?;
        let data = self.node.data.lock();
        let start = to_usize(pos)?;
        let Some(source) = start
            .checked_add(buf.len())
            .and_then(|end| data.live.get(start..end))
        else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end of file",
            ));
        };
        buf.copy_from_slice(source);
        Ok(())
    }

    fn write_all_at(&self, bytes: &[u8], pos: u64) -> io::Result<()> {
        self.check_alive()?;
        let mut data = self.node.data.lock();
        let start = to_usize(pos)?;
        let end = start
            .checked_add(bytes.len())
            .ok_or(io::ErrorKind::InvalidInput)?;
        let live = Arc::make_mut(&mut data.live);
        if live.len() < end {
            live.resize(end, 0);
        }
        live[start..end].copy_from_slice(bytes);
        if self.fs.track_durability {
            mark_dirty(&mut data, start..end);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_alive()?;
        let mut data = self.node.data.lock();
        let len = to_usize(len)?;
        let old_len = data.live.len();
        Arc::make_mut(&mut data.live).resize(len, 0);
        if self.fs.track_durability {
            mark_dirty(&mut data, len.min(old_len)..len.max(old_len));
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check_alive()?;
        if self.fs.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected sync failure"));
        }
        if self.fs.track_durability {
            let recorder = self.fs.recorder();
            sync_node(&mut self.node.data.lock());
            self.fs.record(recorder);
        }
        Ok(())
    }
}

/// Makes what was written to a file durable.
fn sync_node(data: &mut FileData) {
    let live = &data.live;
    // The same bytes: not written since the image this file comes from was taken.
    if !Arc::ptr_eq(live, &data.durable) {
        // Copied first if an image still holds the old durable contents.
        let durable = Arc::make_mut(&mut data.durable);
        durable.resize(live.len(), 0);
        for range in data.dirty.drain(..) {
            let end = range.end.min(live.len());
            if range.start < end {
                durable[range.start..end].copy_from_slice(&live[range.start..end]);
            }
        }
    }
    data.dirty.clear();
}

/// `syncfs`: every file's data durable at once (entries of directories are not: as on Linux,
/// those need their directory synced).
fn sync_all_files(fs: &MemFs) -> io::Result<()> {
    if fs.fail_syncs.load(Ordering::SeqCst) {
        return Err(io::Error::other("injected sync failure"));
    }
    if !fs.track_durability {
        return Ok(());
    }
    let recorder = fs.recorder();
    let nodes: Vec<Arc<FileNode>> = {
        let namespace = fs.namespace.lock();
        namespace
            .dirs
            .values()
            .flat_map(|dir| dir.live.values())
            .filter_map(|node| match node {
                Node::File(file) => Some(Arc::clone(file)),
                Node::Dir(_) => None,
            })
            .collect()
    };
    for node in nodes {
        sync_node(&mut node.data.lock());
    }
    fs.record(recorder);
    Ok(())
}

fn mark_dirty(data: &mut FileData, range: Range<usize>) {
    if let Some(last) = data.dirty.last_mut()
        && last.end == range.start
    {
        // Appends extend the previous range: the common case stays one range per file.
        last.end = range.end;
        return;
    }
    data.dirty.push(range);
    if data.dirty.len() > DIRTY_RANGES_MAX {
        let start = data.dirty.iter().map(|r| r.start).min().unwrap_or(0);
        let end = data.dirty.iter().map(|r| r.end).max().unwrap_or(0);
        data.dirty.clear();
        data.dirty.push(start..end);
    }
}

/// Everything in memory, with no durability: for `--in-memory` servers and tests.
#[derive(Clone, Debug)]
pub struct MemBackend {
    fs: Arc<MemFs>,
}

impl MemBackend {
    /// An empty in-memory file system.
    pub fn new() -> Self {
        Self {
            fs: MemFs::new(false, Namespace::new()),
        }
    }
}

impl Default for MemBackend {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! impl_backend {
    ($type:ty) => {
        impl Backend for $type {
            fn open_file(&self, path: &str, create: bool) -> io::Result<Arc<dyn BackendFile>> {
                open_file(&self.fs, path, create)
            }
            fn create_dir(&self, path: &str) -> io::Result<()> {
                create_dir(&self.fs, path)
            }
            fn list_dir(&self, path: &str) -> io::Result<Vec<DirEntry>> {
                list_dir(&self.fs, path)
            }
            fn remove_file(&self, path: &str) -> io::Result<()> {
                remove(&self.fs, path, false)
            }
            fn remove_dir(&self, path: &str) -> io::Result<()> {
                remove(&self.fs, path, true)
            }
            fn rename(&self, from: &str, to: &str) -> io::Result<()> {
                rename(&self.fs, from, to)
            }
            fn sync_dir(&self, path: &str) -> io::Result<()> {
                sync_dir(&self.fs, path)
            }
            fn volatile(&self) -> bool {
                // A crash model keeps what was synced; a plain in-memory store keeps nothing.
                !self.fs.track_durability
            }
            fn can_sync_all_files(&self) -> bool {
                true
            }
            fn sync_all_files(&self) -> io::Result<()> {
                sync_all_files(&self.fs)
            }
        }
    };
}

impl_backend!(MemBackend);
impl_backend!(CrashBackend);

/// An in-memory file system that can crash: for crash-consistency tests.
///
/// It remembers, per file, what was synced and, per directory, which entries were synced.
/// [`CrashBackend::snapshot`] returns a new backend holding only that (what a crash right now
/// would leave) while this one keeps running; [`CrashBackend::crash`] does the same in place
/// and makes every handle opened before it fail, as if the process had died.
#[derive(Clone, Debug)]
pub struct CrashBackend {
    fs: Arc<MemFs>,
}

impl CrashBackend {
    /// An empty file system.
    pub fn new() -> Self {
        Self {
            fs: MemFs::new(true, Namespace::new()),
        }
    }

    /// What a crash now would leave on disk, as an independent backend.
    pub fn snapshot(&self) -> CrashBackend {
        Self {
            fs: MemFs::new(true, self.fs.durable_image()),
        }
    }

    /// Crashes in place: unsynced writes and directory changes are forgotten, and every handle
    /// opened before the crash fails from now on. Open a new store on this backend to recover.
    pub fn crash(&self) {
        let image = self.fs.durable_image();
        let mut namespace = self.fs.namespace.lock();
        self.fs.generation.fetch_add(1, Ordering::SeqCst);
        *namespace = image;
    }

    /// Starts (or stops) recording the durable image after every operation that changes it: a
    /// successful `sync_data` of a file, and `sync_dir` (creations, renames and removals reach
    /// the disk only through it, in this model). The images recorded are every state a crash
    /// could leave, in the order the workload passed through them; [`take_durable_images`]
    /// returns them. An image shares file contents with this backend until either side writes,
    /// so recording costs about one copy of each file per sync of it.
    ///
    /// [`take_durable_images`]: CrashBackend::take_durable_images
    pub fn record_durable_images(&self, on: bool) {
        let _images = self.fs.images.lock();
        self.fs.recording.store(on, Ordering::SeqCst);
    }

    /// How many durable images were recorded since the last [`take_durable_images`]. Read right
    /// after an acknowledgement (a `Durable` completed), it bounds the image of the sync that
    /// acknowledged it: that image was recorded before the sync returned, so its index is below
    /// the count.
    ///
    /// [`take_durable_images`]: CrashBackend::take_durable_images
    pub fn durable_images_recorded(&self) -> usize {
        self.fs.images.lock().len()
    }

    /// The durable images recorded so far, oldest first (and forgets them): each an independent
    /// backend, as [`CrashBackend::snapshot`] would have returned right after that sync.
    pub fn take_durable_images(&self) -> Vec<CrashBackend> {
        std::mem::take(&mut *self.fs.images.lock())
            .into_iter()
            .map(|image| Self {
                fs: MemFs::new(true, image),
            })
            .collect()
    }

    /// Makes every `sync_data` fail (or succeed again), to test the failed-log path.
    pub fn set_fail_syncs(&self, fail: bool) {
        self.fs.fail_syncs.store(fail, Ordering::SeqCst);
    }

    /// The current (not necessarily durable) contents of the file at `path`.
    pub fn read_file(&self, path: &str) -> io::Result<Vec<u8>> {
        Ok(self.fs.file_node(path)?.data.lock().live.to_vec())
    }

    /// Flips one bit of the file at `path`, on "disk" as well (durable state included).
    pub fn flip_bit(&self, path: &str, byte: u64, bit: u8) -> io::Result<()> {
        let node = self.fs.file_node(path)?;
        let mut data = node.data.lock();
        let at = to_usize(byte)?;
        let mask = 1u8 << (bit % 8);
        let live = Arc::make_mut(&mut data.live)
            .get_mut(at)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        *live ^= mask;
        if let Some(durable) = Arc::make_mut(&mut data.durable).get_mut(at) {
            *durable ^= mask;
        }
        Ok(())
    }

    /// Truncates the file at `path` to `len` bytes, on "disk" as well.
    pub fn truncate(&self, path: &str, len: u64) -> io::Result<()> {
        let node = self.fs.file_node(path)?;
        let mut data = node.data.lock();
        let len = to_usize(len)?;
        Arc::make_mut(&mut data.live).truncate(len);
        Arc::make_mut(&mut data.durable).truncate(len);
        for range in &mut data.dirty {
            range.end = range.end.min(len);
        }
        Ok(())
    }
}

impl Default for CrashBackend {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(backend: &CrashBackend, path: &str) -> Option<Vec<u8>> {
        backend.read_file(path).ok()
    }

    #[test]
    fn unsynced_writes_and_entries_vanish() -> io::Result<()> {
        let backend = CrashBackend::new();
        backend.create_dir("d")?;
        let file = backend.open_file("d/f", true)?;
        file.write_all_at(b"hello", 0)?;
        file.sync_data()?;
        // The file's directory entry was never synced: the whole file vanishes (and `d` too).
        assert_eq!(contents(&backend.snapshot(), "d/f"), None);
        backend.sync_dir("")?;
        backend.sync_dir("d")?;
        file.write_all_at(b" world", 5)?;
        assert_eq!(
            contents(&backend.snapshot(), "d/f"),
            Some(b"hello".to_vec())
        );
        file.sync_data()?;
        assert_eq!(
            contents(&backend.snapshot(), "d/f"),
            Some(b"hello world".to_vec())
        );
        file.set_len(2)?;
        assert_eq!(
            contents(&backend.snapshot(), "d/f"),
            Some(b"hello world".to_vec())
        );
        backend.remove_file("d/f")?;
        // An unsynced removal is undone by a crash.
        assert_eq!(
            contents(&backend.snapshot(), "d/f"),
            Some(b"hello world".to_vec())
        );
        backend.sync_dir("d")?;
        assert_eq!(contents(&backend.snapshot(), "d/f"), None);
        Ok(())
    }

    #[test]
    fn renamed_directory_keeps_its_contents() -> io::Result<()> {
        let backend = CrashBackend::new();
        backend.create_dir("a")?;
        backend.create_dir("b")?;
        let file = backend.open_file("a/f", true)?;
        file.write_all_at(b"x", 0)?;
        file.sync_data()?;
        backend.sync_dir("a")?;
        backend.sync_dir("")?;
        backend.rename("a", "b/a")?;
        assert_eq!(contents(&backend.snapshot(), "a/f"), Some(b"x".to_vec()));
        backend.sync_dir("")?;
        backend.sync_dir("b")?;
        let after = backend.snapshot();
        assert_eq!(contents(&after, "a/f"), None);
        assert_eq!(contents(&after, "b/a/f"), Some(b"x".to_vec()));
        Ok(())
    }

    #[test]
    fn every_durable_state_is_recorded_in_order() -> io::Result<()> {
        let backend = CrashBackend::new();
        backend.create_dir("d")?;
        let file = backend.open_file("d/f", true)?;
        file.write_all_at(b"one", 0)?;
        file.sync_data()?;
        backend.record_durable_images(true);
        backend.sync_dir("")?;
        backend.sync_dir("d")?;
        file.write_all_at(b" two", 3)?;
        file.sync_data()?;
        // Not durable yet, so not recorded: only the syncs are.
        file.write_all_at(b" three", 7)?;
        backend.rename("d/f", "d/g")?;
        assert_eq!(backend.durable_images_recorded(), 3);
        backend.sync_dir("d")?;
        backend.record_durable_images(false);
        file.sync_data()?;
        let images = backend.take_durable_images();
        assert_eq!(backend.durable_images_recorded(), 0);
        let found: Vec<_> = images
            .iter()
            .map(|image| (contents(image, "d/f"), contents(image, "d/g")))
            .collect();
        assert_eq!(
            found,
            [
                (None, None),
                (Some(b"one".to_vec()), None),
                (Some(b"one two".to_vec()), None),
                (None, Some(b"one two".to_vec())),
            ]
        );
        // Images are independent of the backend and of each other.
        images[3].open_file("d/g", false)?.write_all_at(b"ONE", 0)?;
        assert_eq!(contents(&images[2], "d/f"), Some(b"one two".to_vec()));
        assert_eq!(contents(&backend, "d/g"), Some(b"one two three".to_vec()));
        assert_eq!(
            contents(&backend.snapshot(), "d/g"),
            Some(b"one two three".to_vec())
        );
        Ok(())
    }

    #[test]
    fn crash_in_place_kills_old_handles() -> io::Result<()> {
        let backend = CrashBackend::new();
        let file = backend.open_file("f", true)?;
        backend.sync_dir("")?;
        file.write_all_at(b"abc", 0)?;
        backend.crash();
        assert!(file.len().is_err());
        assert_eq!(backend.open_file("f", false)?.len()?, 0);
        Ok(())
    }
}
