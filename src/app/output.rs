//! Output files the CLI and the converter write (`--logits-out`, `--log`,
//! `--html`, `tah-convert -o`), written so that nothing at the destination is
//! damaged:
//!
//! - A regular file, or a path with nothing there yet, is written to a
//!   temporary file beside it and renamed into place when complete: readers see
//!   the old file or the new one, never half of one, and a failed write leaves
//!   the old file as it was. A replaced file keeps its permission bits.
//! - Anything else — a symbolic link, a device (`/dev/null`), a FIFO — is
//!   written through, never replaced: renaming over `/dev/null` as root would
//!   replace the system's `/dev/null` with a regular file.
//! - Every error names the file.
//! - The temporaries of the writes in progress are removed when the process is
//!   stopped by SIGINT, SIGTERM or SIGHUP, once [`remove_temporaries_on_signals`]
//!   has been called (the CLI and the converter do; a library embedded in an app
//!   installs no signal handlers). A run killed by SIGKILL leaves its temporary,
//!   named `.NAME.tmp-PID-N`; the next write to the same destination removes it.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// `err` with the file's name in front.
pub fn name_error(path: &Path, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{}: {err}", path.display()))
}

/// Writes `dest` with `write` as the module doc says, and returns what `write`
/// returned. On error the destination is untouched (a regular file) or holds
/// what was written before the error (a device or FIFO written through).
pub fn write_output<T, E>(
    dest: &Path,
    write: impl FnOnce(&mut OutputFile) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<io::Error>,
{
    let mut out = OutputFile::create(dest)?;
    let value = write(&mut out)?;
    out.commit()?;
    Ok(value)
}

/// An output file being written (see the module doc); [`OutputFile::commit`]
/// puts it in place. Dropped without a commit, its temporary is removed.
pub struct OutputFile {
    dest: PathBuf,
    w: BufWriter<File>,
    /// The temporary and its signal-cleanup slot; `None` when written through.
    tmp: Option<(PathBuf, usize)>,
    /// The permission bits of the regular file being replaced.
    mode: Option<std::fs::Permissions>,
}

impl OutputFile {
    pub fn create(dest: &Path) -> io::Result<OutputFile> {
        let named = |e| name_error(dest, e);
        let existing = match std::fs::symlink_metadata(dest) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(named(e)),
        };
        match &existing {
            Some(m) if m.is_dir() => {
                return Err(named(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "is a directory",
                )))
            }
            Some(m) if !m.file_type().is_file() => {
                // A link, device, FIFO or socket: write through it. A link to a
                // regular file is truncated first; O_TRUNC means nothing to a
                // device or FIFO.
                let to_file = std::fs::metadata(dest).is_ok_and(|t| t.is_file());
                let file = OpenOptions::new()
                    .write(true)
                    .truncate(to_file)
                    .open(dest)
                    .map_err(named)?;
                return Ok(OutputFile {
                    dest: dest.to_path_buf(),
                    w: BufWriter::with_capacity(1 << 20, file),
                    tmp: None,
                    mode: None,
                });
            }
            _ => {}
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .ok_or_else(|| {
                named(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the output path has no file name",
                ))
            })?
            .to_string_lossy()
            .into_owned();
        remove_stale_temporaries(&dir, &name);
        // The PID names the writer (for the stale-file cleanup); the counter
        // keeps two writes of one process apart.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| name_error(&tmp, e))?;
        let slot = register(&tmp);
        Ok(OutputFile {
            dest: dest.to_path_buf(),
            w: BufWriter::with_capacity(1 << 20, file),
            tmp: Some((tmp, slot)),
            mode: existing.map(|m| m.permissions()),
        })
    }

    /// Flushes everything to the disk and puts the file in place.
    pub fn commit(mut self) -> io::Result<()> {
        let named = |e| name_error(&self.dest, e);
        self.w.flush().map_err(named)?;
        match self.tmp.take() {
            None => Ok(()),
            Some((tmp, slot)) => {
                let result = (|| {
                    let file = self.w.get_ref();
                    if let Some(mode) = self.mode.take() {
                        file.set_permissions(mode)?;
                    }
                    file.sync_all()?;
                    std::fs::rename(&tmp, &self.dest)
                })();
                if result.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                unregister(slot);
                result.map_err(named)
            }
        }
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.write(buf).map_err(|e| name_error(&self.dest, e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.flush().map_err(|e| name_error(&self.dest, e))
    }
}

impl io::Seek for OutputFile {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.w.seek(pos).map_err(|e| name_error(&self.dest, e))
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if let Some((tmp, slot)) = self.tmp.take() {
            let _ = std::fs::remove_file(&tmp);
            unregister(slot);
        }
    }
}

fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file_name = e.file_name().to_string_lossy().into_owned();
        // `.NAME.tmp-PID-N`: the PID names the writer.
        let pid = file_name
            .strip_prefix(&prefix)
            .and_then(|p| p.split('-').next()?.parse::<u32>().ok());
        let Some(pid) = pid else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn process_alive(pid: u32) -> bool {
    if cfg!(any(target_os = "linux", target_os = "android")) {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true // cannot tell: keep the file
    }
}

// ---------------------------------------------------------------------------
// Removing temporaries on a signal. A signal handler may not lock or allocate,
// so the temporaries in progress sit in a fixed table of C strings that the
// handler reads with atomic loads and unlinks.

/// Writes in progress whose temporaries a signal removes (more are still
/// written, just not cleaned up on a signal).
const SLOTS: usize = 16;
static TEMPORARIES: [AtomicPtr<libc::c_char>; SLOTS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];

/// Enters `path` in the table; returns its slot (`SLOTS` when full or the path
/// cannot be a C string).
fn register(path: &Path) -> usize {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return SLOTS;
    };
    let raw = c.into_raw();
    for (i, slot) in TEMPORARIES.iter().enumerate() {
        if slot
            .compare_exchange(
                std::ptr::null_mut(),
                raw,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            return i;
        }
    }
    // SAFETY: `raw` came from `CString::into_raw` above and was not stored.
    drop(unsafe { CString::from_raw(raw) });
    SLOTS
}

fn unregister(slot: usize) {
    if let Some(s) = TEMPORARIES.get(slot) {
        let raw = s.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !raw.is_null() {
            // SAFETY: every non-null pointer in the table came from
            // `CString::into_raw` in `register`, and the swap took it out.
            drop(unsafe { CString::from_raw(raw) });
        }
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    for slot in &TEMPORARIES {
        let p = slot.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: a NUL-terminated path that stays allocated while in the
            // table (it is only freed after being swapped out, and the process
            // ends below); unlink is async-signal-safe.
            unsafe { libc::unlink(p) };
        }
    }
    // SAFETY: restoring the default action and raising the signal again are
    // async-signal-safe; the process then ends as the signal intends.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Installs handlers for SIGINT, SIGTERM and SIGHUP that remove the
/// temporaries of the writes in progress and then end the process as the
/// signal would have. For programs (the CLI, the converter), not libraries.
pub fn remove_temporaries_on_signals() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `on_signal` only does async-signal-safe work (atomic loads,
        // unlink, signal, raise).
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
}
