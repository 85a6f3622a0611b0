//! The Filesystem service: wire <-> domain conversion over [`crate::files`].

use std::path::PathBuf;
use std::pin::Pin;
use std::time::UNIX_EPOCH;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use wrenn_envd_api::v1::filesystem_server::Filesystem;
use wrenn_envd_api::v1::write_file_request::Part;
use wrenn_envd_api::v1::{
    EntryInfo, FileChunk, FileType, FsEvent, FsEventKind, ListDirRequest, ListDirResponse,
    MakeDirRequest, MoveRequest, ReadFileRequest, RemoveRequest, RemoveResponse, StatRequest,
    WatchRequest, WriteFileRequest,
};

use crate::files::{
    self, AtomicWrite, Change, ChangeKind, DirRequest, Entry, FileKind, FsError, WatchMode,
    WriteTarget,
};
use crate::report::error_chain;

type ChunkStream = Pin<Box<dyn Stream<Item = Result<FileChunk, Status>> + Send>>;
type EventStream = Pin<Box<dyn Stream<Item = Result<FsEvent, Status>> + Send>>;

#[derive(Debug, Clone, Copy)]
pub struct FilesystemService;

impl From<FsError> for Status {
    fn from(error: FsError) -> Self {
        let message = error_chain(&error);
        match &error {
            FsError::EmptyPath
            | FsError::UnknownUser(_)
            | FsError::NotADirectory { .. }
            | FsError::IsADirectory { .. }
            | FsError::RemoveRoot
            | FsError::MissingHeader
            | FsError::RepeatedHeader
            | FsError::EmptyMessage => Status::invalid_argument(message),
            FsError::ExistsNotDirectory { .. } => Status::already_exists(message),
            FsError::Io { source, .. } => super::io_status(source.kind(), message),
            FsError::Watch { source, .. } => match &source.kind {
                notify::ErrorKind::PathNotFound => Status::not_found(message),
                notify::ErrorKind::Io(io) => super::io_status(io.kind(), message),
                _ => super::internal_message(message),
            },
        }
    }
}

/// Runs a blocking filesystem operation off the async workers.
async fn blocking<T, F>(operation: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, FsError> + Send + 'static,
{
    tokio::task::spawn_blocking(operation)
        .await
        .map_err(|join| super::internal(&join))?
        .map_err(Status::from)
}

#[tonic::async_trait]
impl Filesystem for FilesystemService {
    type ReadFileStream = ChunkStream;
    type WatchStream = EventStream;

    async fn stat(&self, request: Request<StatRequest>) -> Result<Response<EntryInfo>, Status> {
        let path = files::resolve(&request.into_inner().path)?;
        let entry = blocking(move || files::stat(&path)).await?;
        Ok(Response::new(entry_to_wire(entry)))
    }

    async fn list_dir(
        &self,
        request: Request<ListDirRequest>,
    ) -> Result<Response<ListDirResponse>, Status> {
        let request = request.into_inner();
        let path = files::resolve(&request.path)?;
        let entries = blocking(move || files::list_dir(&path, request.depth)).await?;
        Ok(Response::new(ListDirResponse {
            entries: entries.into_iter().map(entry_to_wire).collect(),
        }))
    }

    async fn make_dir(
        &self,
        request: Request<MakeDirRequest>,
    ) -> Result<Response<EntryInfo>, Status> {
        let request = request.into_inner();
        let dir = DirRequest {
            path: files::resolve(&request.path)?,
            user: request.user,
            mode: request.mode,
        };
        let entry = blocking(move || files::make_dir(&dir)).await?;
        Ok(Response::new(entry_to_wire(entry)))
    }

    async fn r#move(&self, request: Request<MoveRequest>) -> Result<Response<EntryInfo>, Status> {
        let request = request.into_inner();
        let source = files::resolve(&request.source)?;
        let destination = files::resolve(&request.destination)?;
        let entry = blocking(move || files::move_entry(&source, &destination)).await?;
        Ok(Response::new(entry_to_wire(entry)))
    }

    async fn remove(
        &self,
        request: Request<RemoveRequest>,
    ) -> Result<Response<RemoveResponse>, Status> {
        let path = files::resolve(&request.into_inner().path)?;
        blocking(move || files::remove(&path)).await?;
        Ok(Response::new(RemoveResponse {}))
    }

    async fn read_file(
        &self,
        request: Request<ReadFileRequest>,
    ) -> Result<Response<Self::ReadFileStream>, Status> {
        let path = files::resolve(&request.into_inner().path)?;
        let file = files::open_for_read(&path).await?;
        let chunks = files::read_chunks(file, path).map(|chunk| {
            chunk
                .map(|data| FileChunk { data: data.into() })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn write_file(
        &self,
        request: Request<Streaming<WriteFileRequest>>,
    ) -> Result<Response<EntryInfo>, Status> {
        let mut stream = request.into_inner();
        let header = match stream.message().await?.and_then(|message| message.part) {
            Some(Part::Header(header)) => header,
            _ => return Err(FsError::MissingHeader.into()),
        };
        let mut upload = AtomicWrite::begin(WriteTarget {
            path: files::resolve(&header.path)?,
            mode: header.mode,
            user: header.user,
        })
        .await?;
        // An error or a dropped call returns early, and dropping `upload` discards the data.
        while let Some(message) = stream.message().await? {
            match message.part {
                Some(Part::Data(data)) => upload.write(&data).await?,
                Some(Part::Header(_)) => return Err(FsError::RepeatedHeader.into()),
                None => return Err(FsError::EmptyMessage.into()),
            }
        }
        let entry = upload.commit().await?;
        Ok(Response::new(entry_to_wire(entry)))
    }

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let request = request.into_inner();
        let path = files::resolve(&request.path)?;
        let mode = if request.recursive {
            WatchMode::Recursive
        } else {
            WatchMode::Flat
        };
        let changes = files::watch(&path, mode)?;
        let events = ReceiverStream::new(changes).map(|change| Ok(change_to_wire(change)));
        Ok(Response::new(Box::pin(events)))
    }
}

fn path_string(path: PathBuf) -> String {
    path.into_os_string().to_string_lossy().into_owned()
}

fn entry_to_wire(entry: Entry) -> EntryInfo {
    let file_type = match entry.kind {
        FileKind::File => FileType::File,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Other => FileType::Other,
    };
    EntryInfo {
        name: entry.name,
        path: path_string(entry.path),
        r#type: file_type.into(),
        size: entry.size,
        mode: entry.mode,
        owner: entry.owner,
        group: entry.group,
        modified_ms: entry
            .modified
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as i64),
        symlink_target: entry.symlink_target.map(path_string).unwrap_or_default(),
    }
}

fn change_to_wire(change: Change) -> FsEvent {
    let kind = match change.kind {
        ChangeKind::Create => FsEventKind::Create,
        ChangeKind::Write => FsEventKind::Write,
        ChangeKind::Remove => FsEventKind::Remove,
        ChangeKind::Rename => FsEventKind::Rename,
        ChangeKind::Chmod => FsEventKind::Chmod,
    };
    FsEvent {
        kind: kind.into(),
        path: path_string(change.path),
        from_path: change.from_path.map(path_string).unwrap_or_default(),
    }
}
