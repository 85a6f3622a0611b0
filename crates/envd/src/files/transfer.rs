//! Streamed file transfers: chunked reads, and writes that replace the target atomically.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ops::create_dirs;
use super::{Entry, FsError};
use crate::users::{User, UserDb};

/// Largest chunk ReadFile sends.
pub const READ_CHUNK: usize = 256 * 1024;
/// Mode for files written without an explicit one.
const DEFAULT_FILE_MODE: u32 = 0o644;
/// Mode for parent directories WriteFile creates.
const PARENT_DIR_MODE: u32 = 0o755;

/// Opens a regular file (or anything readable that is not a directory) for ReadFile.
pub async fn open_for_read(path: &Path) -> Result<tokio::fs::File, FsError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(FsError::io("open", path))?;
    let meta = file.metadata().await.map_err(FsError::io("stat", path))?;
    if meta.is_dir() {
        return Err(FsError::IsADirectory {
            path: path.to_path_buf(),
        });
    }
    Ok(file)
}

/// The file's contents as chunks of at most [`READ_CHUNK`] bytes.
pub fn read_chunks(
    file: tokio::fs::File,
    path: PathBuf,
) -> impl Stream<Item = Result<Bytes, FsError>> + Send {
    futures::stream::unfold(Some(file), move |file| {
        let path = path.clone();
        async move {
            let mut file = file?;
            let mut buf = vec![0u8; READ_CHUNK];
            let mut filled = 0;
            // Fill whole chunks so the stream isn't a trickle of small reads.
            while filled < buf.len() {
                match file.read(&mut buf[filled..]).await {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(error) => return Some((Err(FsError::io("read", &path)(error)), None)),
                }
            }
            if filled == 0 {
                return None;
            }
            buf.truncate(filled);
            Some((Ok(Bytes::from(buf)), Some(file)))
        }
    })
}

/// Where and how WriteFile writes.
#[derive(Debug, Clone)]
pub struct WriteTarget {
    pub path: PathBuf,
    /// Permission bits; 0 means 0o644.
    pub mode: u32,
    /// Owner of the file and created parents; empty means root.
    pub user: String,
}

/// A write in progress: data goes to a temporary file beside the target, which replaces the
/// target only on [`AtomicWrite::commit`]. Dropping it uncommitted removes the temporary file
/// and leaves the target as it was.
#[derive(Debug)]
pub struct AtomicWrite {
    target: PathBuf,
    temp: PathBuf,
    file: Option<tokio::fs::File>,
    mode: u32,
    owner: User,
    users: UserDb,
    committed: bool,
}

impl AtomicWrite {
    pub async fn begin(target: WriteTarget) -> Result<Self, FsError> {
        let users = UserDb::load();
        let owner = users.user_or_default(&target.user)?;
        let mode = match target.mode & 0o7777 {
            0 => DEFAULT_FILE_MODE,
            mode => mode,
        };
        let path = target.path;
        if tokio::fs::metadata(&path)
            .await
            .is_ok_and(|meta| meta.is_dir())
        {
            return Err(FsError::IsADirectory { path });
        }
        let parent = path
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| FsError::IsADirectory { path: path.clone() })?;
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();

        let parent_owner = owner.clone();
        let parent_dir = parent.clone();
        tokio::task::spawn_blocking(move || {
            create_dirs(&parent_dir, PARENT_DIR_MODE, &parent_owner)
        })
        .await
        .map_err(|join| FsError::io("create parents", &parent)(std::io::Error::other(join)))??;

        let temp = parent.join(temp_name(&name));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .await
            .map_err(FsError::io("create", &temp))?;
        Ok(Self {
            target: path,
            temp,
            file: Some(file),
            mode,
            owner,
            users,
            committed: false,
        })
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), FsError> {
        let file = self.file.as_mut().ok_or_else(|| closed(&self.temp))?;
        file.write_all(data)
            .await
            .map_err(FsError::io("write", &self.temp))
    }

    /// Flushes, sets owner and mode, and renames the data over the target.
    pub async fn commit(mut self) -> Result<Entry, FsError> {
        let mut file = self.file.take().ok_or_else(|| closed(&self.temp))?;
        file.flush()
            .await
            .map_err(FsError::io("write", &self.temp))?;
        let std_file = file.into_std().await;
        let temp = self.temp.clone();
        let (uid, gid, mode) = (self.owner.uid, self.owner.gid, self.mode);
        tokio::task::spawn_blocking(move || -> Result<(), FsError> {
            // chown first: it clears setuid/setgid bits that chmod then sets.
            std::os::unix::fs::fchown(&std_file, Some(uid), Some(gid))
                .map_err(FsError::io("chown", &temp))?;
            std::fs::File::set_permissions(
                &std_file,
                std::os::unix::fs::PermissionsExt::from_mode(mode),
            )
            .map_err(FsError::io("chmod", &temp))?;
            std_file.sync_all().map_err(FsError::io("sync", &temp))
        })
        .await
        .map_err(|join| FsError::io("sync", &self.temp)(std::io::Error::other(join)))??;

        tokio::fs::rename(&self.temp, &self.target)
            .await
            .map_err(FsError::io("rename", &self.target))?;
        self.committed = true;
        if let Some(parent) = self.target.parent() {
            // Makes the rename itself durable; failing here does not undo the write.
            if let Ok(dir) = tokio::fs::File::open(parent).await {
                let _ = dir.sync_all().await;
            }
        }
        let target = self.target.clone();
        let users = std::mem::take(&mut self.users);
        tokio::task::spawn_blocking(move || Entry::read(&target, &users))
            .await
            .map_err(|join| FsError::io("stat", &self.target)(std::io::Error::other(join)))?
    }
}

impl Drop for AtomicWrite {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(error) = std::fs::remove_file(&self.temp) {
                tracing::warn!(path = %self.temp.display(), %error, "remove aborted upload");
            }
        }
    }
}

fn closed(temp: &Path) -> FsError {
    FsError::io("write", temp)(std::io::Error::other("upload already finished"))
}

/// A hidden, unique name in the target's directory, short enough for any target name.
fn temp_name(name: &str) -> String {
    const NAME_PREFIX_CHARS: usize = 64;
    let name: String = name.chars().take(NAME_PREFIX_CHARS).collect();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    format!(
        ".{name}.envd-{}-{}-{nanos}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
