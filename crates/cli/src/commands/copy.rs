//! `wrenn sandbox cp`: stream one file into a sandbox (`PUT …/files?path=`) or out of one
//! (`GET …/files?path=`) with a progress bar; one side is written `ID:/path`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use futures::stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api::ApiClient;
use crate::output::{self, print_json, Format};

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// A local path, or ID:/path in a sandbox.
    src: String,
    /// A local path (`-` for stdout), or ID:/path in a sandbox (ending in `/`: keep the name).
    dst: String,
}

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Local(PathBuf),
    Sandbox { id: String, path: String },
}

impl Location {
    /// `ID:/absolute/path` is in a sandbox; anything else (including `./a:b`) is local.
    fn parse(s: &str) -> Self {
        match s.split_once(':') {
            Some((id, path)) if !id.is_empty() && !id.contains('/') && path.starts_with('/') => {
                Location::Sandbox {
                    id: id.to_owned(),
                    path: path.to_owned(),
                }
            }
            _ => Location::Local(PathBuf::from(s)),
        }
    }
}

pub async fn copy(client: &ApiClient, args: CopyArgs, format: Format) -> anyhow::Result<()> {
    match (Location::parse(&args.src), Location::parse(&args.dst)) {
        (Location::Local(local), Location::Sandbox { id, path }) => {
            upload(client, &local, &id, &path, format).await
        }
        (Location::Sandbox { id, path }, Location::Local(local)) => {
            download(client, &id, &path, &local, format).await
        }
        (Location::Local(_), Location::Local(_)) => {
            bail!("one side of the copy must be in a sandbox, written ID:/path")
        }
        (Location::Sandbox { .. }, Location::Sandbox { .. }) => {
            bail!("copying from one sandbox to another is not supported; copy through a local file")
        }
    }
}

/// `dir/` keeps the source's name; anything else is the full target path.
fn remote_target(path: &str, local: &Path) -> anyhow::Result<String> {
    if !path.ends_with('/') {
        return Ok(path.to_owned());
    }
    let name = local
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no file name to copy under", local.display()))?;
    Ok(format!("{path}{name}"))
}

async fn upload(
    client: &ApiClient,
    local: &Path,
    id: &str,
    path: &str,
    format: Format,
) -> anyhow::Result<()> {
    let file = tokio::fs::File::open(local)
        .await
        .with_context(|| format!("open {}", local.display()))?;
    let metadata = file
        .metadata()
        .await
        .with_context(|| format!("read {}", local.display()))?;
    if !metadata.is_file() {
        bail!(
            "{} is not a regular file (only files can be copied)",
            local.display()
        );
    }
    let target = remote_target(path, local)?;
    let len = metadata.len();
    let bar = output::transfer_bar(Some(len), format!("{id}:{target}"));
    let chunks = stream::unfold((file, bar.clone()), |(mut file, bar)| async move {
        let mut buffer = vec![0u8; 256 << 10];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                bar.inc(n as u64);
                Some((Ok(buffer), (file, bar)))
            }
            Err(error) => Some((Err(error), (file, bar))),
        }
    });
    let answer = client
        .file_upload(id, &target, reqwest::Body::wrap_stream(chunks), len)
        .await;
    output::finish(&bar);
    let answer = answer?;
    match format {
        Format::Json => print_json(&answer),
        Format::Human => eprintln!("copied {len} bytes to {id}:{target}"),
    }
    Ok(())
}

/// Where a download lands: into a directory under the remote name, else the path itself.
fn local_target(local: &Path, remote: &str) -> anyhow::Result<PathBuf> {
    let into_dir = local.is_dir() || local.as_os_str().to_string_lossy().ends_with('/');
    if !into_dir {
        return Ok(local.to_owned());
    }
    let name = Path::new(remote)
        .file_name()
        .with_context(|| format!("{remote} has no file name to copy under"))?;
    Ok(local.join(name))
}

async fn download(
    client: &ApiClient,
    id: &str,
    path: &str,
    local: &Path,
    format: Format,
) -> anyhow::Result<()> {
    let to_stdout = local.as_os_str() == "-";
    let mut response = client.file_download(id, path).await?;
    let bar = output::transfer_bar(response.content_length(), format!("{id}:{path}"));
    let written = if to_stdout {
        let mut stdout = tokio::io::stdout();
        let written = write_body(&mut response, &mut stdout, &bar).await;
        let _ = stdout.flush().await;
        output::finish(&bar);
        written?
    } else {
        let target = local_target(local, path)?;
        // Into a temporary file beside the target, renamed at the end: an interrupted
        // download never leaves a truncated file under the real name.
        let partial = partial_path(&target);
        let mut file = tokio::fs::File::create(&partial)
            .await
            .with_context(|| format!("create {}", partial.display()))?;
        let written = write_body(&mut response, &mut file, &bar).await;
        output::finish(&bar);
        let finished = match written {
            Ok(n) => file
                .sync_all()
                .await
                .map(|()| n)
                .map_err(anyhow::Error::from),
            Err(error) => Err(error),
        };
        let written = match finished {
            Ok(n) => n,
            Err(error) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(error);
            }
        };
        tokio::fs::rename(&partial, &target)
            .await
            .with_context(|| format!("move the download to {}", target.display()))?;
        if format == Format::Human {
            eprintln!("copied {written} bytes to {}", target.display());
        }
        written
    };
    if format == Format::Json {
        print_json(&serde_json::json!({ "sandbox_id": id, "path": path, "bytes": written }));
    }
    Ok(())
}

fn partial_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".wrenn-partial");
    target.with_file_name(name)
}

async fn write_body(
    response: &mut reqwest::Response,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<u64> {
    let mut written = 0u64;
    while let Some(chunk) = response.chunk().await.context("download broke off")? {
        out.write_all(&chunk).await.context("write the download")?;
        written += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
    }
    if let Some(expected) = response.content_length() {
        if expected != written {
            bail!("download ended after {written} of {expected} bytes");
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_local_unless_written_id_colon_absolute_path() {
        let sandbox = |id: &str, path: &str| Location::Sandbox {
            id: id.into(),
            path: path.into(),
        };
        let cases = [
            ("sb-abc:/tmp/x", sandbox("sb-abc", "/tmp/x")),
            ("sb-abc:/", sandbox("sb-abc", "/")),
            ("sb-abc:relative", Location::Local("sb-abc:relative".into())),
            ("./a:/b", Location::Local("./a:/b".into())),
            (":/x", Location::Local(":/x".into())),
            ("plain.txt", Location::Local("plain.txt".into())),
        ];
        for (text, expected) in cases {
            assert_eq!(Location::parse(text), expected, "{text}");
        }
    }

    #[test]
    fn targets_keep_the_source_name_when_given_a_directory() {
        let local = Path::new("/home/me/data.bin");
        assert_eq!(remote_target("/tmp/", local).unwrap(), "/tmp/data.bin");
        assert_eq!(remote_target("/tmp/y", local).unwrap(), "/tmp/y");
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            local_target(dir.path(), "/srv/out.txt").unwrap(),
            dir.path().join("out.txt")
        );
        assert_eq!(
            local_target(&dir.path().join("new"), "/srv/out.txt").unwrap(),
            dir.path().join("new")
        );
        assert_eq!(
            partial_path(Path::new("/a/b.txt")),
            Path::new("/a/b.txt.wrenn-partial")
        );
    }
}
