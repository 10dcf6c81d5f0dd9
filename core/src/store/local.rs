//! A directory as an object store.
//!
//! Objects are files under the root, at their key's path. Writes go to a
//! temporary file under `.vodfarm-tmp/` and are renamed into place, so a
//! reader sees the old object or the new one, never half of one.
//! Multipart parts live under `.vodfarm-multipart/{upload_id}/` until
//! completed. The ETag is derived from size, modification time and inode
//! (as nginx does): any rewrite changes it.

use super::{
    check_key, ByteRange, ByteStream, CompletedPart, GetObject, ObjectMeta, ObjectStore,
    StoreError, MIN_PART_SIZE,
};
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

const TMP_DIR: &str = ".vodfarm-tmp";
const MULTIPART_DIR: &str = ".vodfarm-multipart";

/// A directory-backed [`ObjectStore`].
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root` (created if missing).
    pub async fn new(root: impl AsRef<Path>) -> Result<Self, StoreError> {
        let root = root.as_ref().to_path_buf();
        tokio::fs::create_dir_all(root.join(TMP_DIR)).await?;
        tokio::fs::create_dir_all(root.join(MULTIPART_DIR)).await?;
        Ok(LocalStore { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        if key.starts_with(TMP_DIR) || key.starts_with(MULTIPART_DIR) {
            return Err(StoreError::InvalidKey(key.to_owned()));
        }
        Ok(self.root.join(key))
    }

    fn upload_dir(&self, upload_id: &str) -> Result<PathBuf, StoreError> {
        let ok = !upload_id.is_empty()
            && upload_id.len() <= 64
            && upload_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(StoreError::NotFound(format!(
                "multipart upload {upload_id}"
            )));
        }
        Ok(self.root.join(MULTIPART_DIR).join(upload_id))
    }

    fn temp_path(&self) -> PathBuf {
        self.root
            .join(TMP_DIR)
            .join(uuid::Uuid::new_v4().simple().to_string())
    }

    async fn meta(&self, key: &str, path: &Path) -> Result<ObjectMeta, StoreError> {
        let md = match tokio::fs::metadata(path).await {
            Ok(md) if md.is_file() => md,
            Ok(_) => return Err(StoreError::NotFound(key.to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(key.to_owned()))
            }
            Err(e) => return Err(e.into()),
        };
        let modified: DateTime<Utc> = md
            .modified()
            .map(DateTime::from)
            .unwrap_or_else(|_| Utc::now());
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(&md);
        #[cfg(not(unix))]
        let ino = 0u64;
        let nanos = modified.timestamp_nanos_opt().unwrap_or_default();
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: md.len(),
            etag: format!("{:x}-{:x}-{:x}", md.len(), nanos, ino),
            last_modified: modified,
        })
    }

    /// Moves a finished temporary file to `key`'s path.
    async fn publish(&self, tmp: &Path, key: &str) -> Result<ObjectMeta, StoreError> {
        let path = self.path(key)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::rename(tmp, &path).await?;
        self.meta(key, &path).await
    }

    async fn write_stream(&self, tmp: &Path, mut body: ByteStream) -> Result<(), StoreError> {
        let mut file = tokio::fs::File::create(tmp).await?;
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk?).await?;
        }
        file.sync_all().await?;
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<ObjectMeta, StoreError> {
        self.put_stream(
            key,
            Box::pin(futures::stream::once(async move { Ok(body) })),
        )
        .await
    }

    async fn put_stream(&self, key: &str, body: ByteStream) -> Result<ObjectMeta, StoreError> {
        self.path(key)?;
        let tmp = self.temp_path();
        if let Err(e) = self.write_stream(&tmp, body).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        self.publish(&tmp, key).await
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetObject, StoreError> {
        let path = self.path(key)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(key.to_owned()))
            }
            Err(e) => return Err(e.into()),
        };
        // Metadata of the opened file: a concurrent rename cannot make the
        // size and the bytes disagree.
        let meta = self.meta(key, &path).await?;
        let (first, last) = match range {
            None if meta.size == 0 => (0, 0),
            None => (0, meta.size - 1),
            Some(r) => r
                .resolve(meta.size)
                .ok_or(StoreError::RangeNotSatisfiable { size: meta.size })?,
        };
        let len = if meta.size == 0 { 0 } else { last - first + 1 };
        file.seek(std::io::SeekFrom::Start(first)).await?;
        let reader = file.take(len);
        let body = tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024)
            .map(|r| r.map_err(StoreError::from));
        Ok(GetObject {
            meta,
            range: (first, last),
            body: Box::pin(body),
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let path = self.path(key)?;
        self.meta(key, &path).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        if prefix.contains("..") || prefix.starts_with('/') || prefix.contains('\\') {
            return Err(StoreError::InvalidKey(prefix.to_owned()));
        }
        // Walk only the deepest directory the prefix names.
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let mut out = Vec::new();
        let mut stack = vec![self.root.join(dir_part)];
        while let Some(dir) = stack.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            while let Some(entry) = entries.next_entry().await? {
                let path = entry.path();
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let Some(rel) = rel.to_str() else { continue };
                if rel.starts_with(TMP_DIR) || rel.starts_with(MULTIPART_DIR) {
                    continue;
                }
                let ft = entry.file_type().await?;
                if ft.is_dir() {
                    let as_prefix = format!("{rel}/");
                    if as_prefix.starts_with(prefix) || prefix.starts_with(&as_prefix) {
                        stack.push(path);
                    }
                } else if ft.is_file() && rel.starts_with(prefix) {
                    out.push(self.meta(rel, &path).await?);
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn create_multipart(&self, key: &str) -> Result<String, StoreError> {
        self.path(key)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        tokio::fs::create_dir_all(self.upload_dir(&id)?).await?;
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
    ) -> Result<CompletedPart, StoreError> {
        self.path(key)?;
        if !(1..=10_000).contains(&part_number) {
            return Err(StoreError::InvalidPart(format!(
                "part number {part_number} not in 1..=10000"
            )));
        }
        let dir = self.upload_dir(upload_id)?;
        if !tokio::fs::try_exists(&dir).await? {
            return Err(StoreError::NotFound(format!(
                "multipart upload {upload_id}"
            )));
        }
        let tmp = self.temp_path();
        let mut file = tokio::fs::File::create(&tmp).await?;
        file.write_all(&body).await?;
        file.sync_all().await?;
        let part = dir.join(format!("{part_number:05}"));
        tokio::fs::rename(&tmp, &part).await?;
        let etag = self.meta(key, &part).await?.etag;
        Ok(CompletedPart { part_number, etag })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, StoreError> {
        self.path(key)?;
        let dir = self.upload_dir(upload_id)?;
        if !tokio::fs::try_exists(&dir).await? {
            return Err(StoreError::NotFound(format!(
                "multipart upload {upload_id}"
            )));
        }
        if parts.is_empty()
            || parts
                .windows(2)
                .any(|w| w[0].part_number >= w[1].part_number)
        {
            return Err(StoreError::InvalidPart(
                "parts must be listed in ascending order".into(),
            ));
        }
        let tmp = self.temp_path();
        let mut out = tokio::fs::File::create(&tmp).await?;
        let result: Result<(), StoreError> = async {
            for (i, p) in parts.iter().enumerate() {
                let path = dir.join(format!("{:05}", p.part_number));
                let meta = self.meta(key, &path).await.map_err(|_| {
                    StoreError::InvalidPart(format!("part {} was not uploaded", p.part_number))
                })?;
                if meta.etag != p.etag {
                    return Err(StoreError::InvalidPart(format!(
                        "part {} ETag mismatch",
                        p.part_number
                    )));
                }
                if i + 1 < parts.len() && meta.size < MIN_PART_SIZE {
                    return Err(StoreError::InvalidPart(format!(
                        "part {} is {} bytes; all but the last must be at least 5 MiB",
                        p.part_number, meta.size
                    )));
                }
                let mut src = tokio::fs::File::open(&path).await?;
                tokio::io::copy(&mut src, &mut out).await?;
            }
            out.sync_all().await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let meta = self.publish(&tmp, key).await?;
        tokio::fs::remove_dir_all(&dir).await?;
        Ok(meta)
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.path(key)?;
        let dir = self.upload_dir(upload_id)?;
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_store_passes_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).await.unwrap();
        crate::store::suite::run(&store).await;
    }

    #[tokio::test]
    async fn keys_cannot_reach_internal_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).await.unwrap();
        assert!(matches!(
            store.put(".vodfarm-tmp/x", Bytes::from_static(b"x")).await,
            Err(StoreError::InvalidKey(_))
        ));
        assert!(matches!(
            store.head("../etc/passwd").await,
            Err(StoreError::InvalidKey(_))
        ));
    }
}
