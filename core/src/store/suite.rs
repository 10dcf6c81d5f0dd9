//! The test suite every [`ObjectStore`] implementation must pass.

use super::*;
use futures::StreamExt;

async fn read_all(mut body: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Runs every check against `store`, which must start empty.
pub(crate) async fn run(store: &dyn ObjectStore) {
    // put / get / head.
    let meta = store
        .put("encoded/v_a/master.m3u8", Bytes::from_static(b"#EXTM3U\n"))
        .await
        .unwrap();
    assert_eq!(meta.size, 8);
    let head = store.head("encoded/v_a/master.m3u8").await.unwrap();
    assert_eq!(head.size, 8);
    assert_eq!(head.etag, meta.etag);
    let got = store.get("encoded/v_a/master.m3u8", None).await.unwrap();
    assert_eq!(got.range, (0, 7));
    assert_eq!(read_all(got.body).await, b"#EXTM3U\n");

    // Overwrite changes the ETag.
    let meta2 = store
        .put(
            "encoded/v_a/master.m3u8",
            Bytes::from_static(b"#EXTM3U\n#2\n"),
        )
        .await
        .unwrap();
    assert_ne!(meta2.etag, meta.etag);
    assert_eq!(meta2.size, 11);

    // Ranges.
    let data = pattern(1000, 7);
    store
        .put("encoded/v_a/720p/segment_0.ts", Bytes::from(data.clone()))
        .await
        .unwrap();
    for (range, want) in [
        (ByteRange::Bounded(10, 19), &data[10..20]),
        (ByteRange::From(990), &data[990..]),
        (ByteRange::Suffix(5), &data[995..]),
        (ByteRange::Bounded(995, 5000), &data[995..]),
    ] {
        let got = store
            .get("encoded/v_a/720p/segment_0.ts", Some(range))
            .await
            .unwrap();
        assert_eq!(got.meta.size, 1000);
        assert_eq!(read_all(got.body).await, want, "{range:?}");
    }
    assert!(matches!(
        store
            .get("encoded/v_a/720p/segment_0.ts", Some(ByteRange::From(1000)))
            .await,
        Err(StoreError::RangeNotSatisfiable { size: 1000 })
    ));

    // Missing objects.
    assert!(matches!(
        store.head("encoded/v_a/nope.ts").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.get("encoded/v_a/nope.ts", None).await,
        Err(StoreError::NotFound(_))
    ));
    store.delete("encoded/v_a/nope.ts").await.unwrap();

    // Streaming put of several parts' worth, read back whole.
    let big = pattern(12 * 1024 * 1024 + 123, 3);
    let chunks: Vec<Result<Bytes, StoreError>> = big
        .chunks(1024 * 1024 + 7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let meta = store
        .put_stream(
            "originals/v_b/original.mp4",
            Box::pin(futures::stream::iter(chunks)),
        )
        .await
        .unwrap();
    assert_eq!(meta.size, big.len() as u64);
    let got = store.get("originals/v_b/original.mp4", None).await.unwrap();
    assert!(
        read_all(got.body).await == big,
        "streamed object round-trips"
    );

    // Multipart: parts in any upload order, re-uploaded part replaces.
    let p1 = pattern(MIN_PART_SIZE as usize, 1);
    let p2 = pattern(1234, 2);
    let id = store
        .create_multipart("originals/v_c/original.mov")
        .await
        .unwrap();
    let c2 = store
        .upload_part(
            "originals/v_c/original.mov",
            &id,
            2,
            Bytes::from(p2.clone()),
        )
        .await
        .unwrap();
    let _ = store
        .upload_part(
            "originals/v_c/original.mov",
            &id,
            1,
            Bytes::from(pattern(MIN_PART_SIZE as usize, 9)),
        )
        .await
        .unwrap();
    let c1 = store
        .upload_part(
            "originals/v_c/original.mov",
            &id,
            1,
            Bytes::from(p1.clone()),
        )
        .await
        .unwrap();
    let meta = store
        .complete_multipart("originals/v_c/original.mov", &id, &[c1, c2])
        .await
        .unwrap();
    assert_eq!(meta.size, (p1.len() + p2.len()) as u64);
    let got = read_all(
        store
            .get("originals/v_c/original.mov", None)
            .await
            .unwrap()
            .body,
    )
    .await;
    assert!(
        got[..p1.len()] == p1[..] && got[p1.len()..] == p2[..],
        "multipart assembled in order"
    );

    // A too-small part but the last is refused.
    let id = store
        .create_multipart("originals/v_d/original.mp4")
        .await
        .unwrap();
    let a = store
        .upload_part(
            "originals/v_d/original.mp4",
            &id,
            1,
            Bytes::from_static(b"tiny"),
        )
        .await
        .unwrap();
    let b = store
        .upload_part(
            "originals/v_d/original.mp4",
            &id,
            2,
            Bytes::from_static(b"last"),
        )
        .await
        .unwrap();
    assert!(store
        .complete_multipart("originals/v_d/original.mp4", &id, &[a, b])
        .await
        .is_err());
    // (Services differ on whether a failed completion keeps the upload.)
    let _ = store
        .abort_multipart("originals/v_d/original.mp4", &id)
        .await;
    assert!(matches!(
        store.head("originals/v_d/original.mp4").await,
        Err(StoreError::NotFound(_))
    ));

    // Abort frees an upload: it can no longer be completed.
    let id = store
        .create_multipart("originals/v_e/original.mp4")
        .await
        .unwrap();
    let a = store
        .upload_part(
            "originals/v_e/original.mp4",
            &id,
            1,
            Bytes::from_static(b"only"),
        )
        .await
        .unwrap();
    store
        .abort_multipart("originals/v_e/original.mp4", &id)
        .await
        .unwrap();
    assert!(store
        .complete_multipart("originals/v_e/original.mp4", &id, &[a])
        .await
        .is_err());
    assert!(matches!(
        store.head("originals/v_e/original.mp4").await,
        Err(StoreError::NotFound(_))
    ));

    // List and delete by prefix.
    store
        .put("encoded/v_a/720p/segment_1.ts", Bytes::from_static(b"x"))
        .await
        .unwrap();
    store
        .put("encoded/v_ab/master.m3u8", Bytes::from_static(b"y"))
        .await
        .unwrap();
    let keys: Vec<String> = store
        .list("encoded/v_a/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(
        keys,
        [
            "encoded/v_a/720p/segment_0.ts",
            "encoded/v_a/720p/segment_1.ts",
            "encoded/v_a/master.m3u8"
        ]
    );
    assert_eq!(store.delete_prefix("encoded/v_a/").await.unwrap(), 3);
    assert!(store.list("encoded/v_a/").await.unwrap().is_empty());
    assert_eq!(
        store.head("encoded/v_ab/master.m3u8").await.unwrap().size,
        1,
        "sibling prefix kept"
    );
    store.delete("encoded/v_ab/master.m3u8").await.unwrap();
    assert!(matches!(
        store.head("encoded/v_ab/master.m3u8").await,
        Err(StoreError::NotFound(_))
    ));

    // Bad keys never reach the store.
    for bad in ["../x", "/abs", "a//b", ""] {
        assert!(
            matches!(
                store.put(bad, Bytes::new()).await,
                Err(StoreError::InvalidKey(_))
            ),
            "{bad:?}"
        );
    }
}
