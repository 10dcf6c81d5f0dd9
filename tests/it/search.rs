//! Search on real PostgreSQL, through a real `vodfarm api` and real
//! `vodfarm search-indexer` processes: relevance order on a fixed corpus,
//! typos, accents, phrases, prefixes, `or` and exclusions, filters,
//! facets, orders and keyset pages, highlights; what must not be seen is
//! never answered, even with the indexer stopped; an indexer SIGKILLed
//! mid-batch and replicas racing leave the index equal to the table; a
//! replay changes nothing; bad input is a 400. Elasticsearch: the same
//! checks when `ELASTICSEARCH_URL` is set (reported as not run otherwise).

use crate::common::metric;
use crate::search_support::{
    index_and_table, insert_channel, insert_videos, titles, Doc, SearchEnv,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn corpus() -> Vec<Doc> {
    vec![
        Doc {
            title: "Guitar lesson for beginners",
            description: "Learn your first chords",
            tags: &["music"],
            views: 10,
            age_days: 9,
            ..Doc::default()
        },
        Doc {
            title: "Piano basics",
            description: "Scales and posture",
            tags: &["guitar"],
            views: 1000,
            age_days: 8,
            ..Doc::default()
        },
        Doc {
            title: "Cooking pasta",
            description: "My guitar hangs on the kitchen wall",
            views: 5000,
            age_days: 7,
            ..Doc::default()
        },
        Doc {
            title: "Crème brûlée at home",
            description: "A French dessert",
            category: Some("Food"),
            duration: 300,
            views: 40,
            age_days: 6,
            ..Doc::default()
        },
        Doc {
            title: "Red guitar solo",
            tags: &["Rock"],
            category: Some("Music"),
            duration: 200,
            views: 300,
            age_days: 5,
            ..Doc::default()
        },
        Doc {
            title: "The guitar is red",
            duration: 1500,
            views: 20,
            age_days: 4,
            ..Doc::default()
        },
        Doc {
            title: "vodfarm demo",
            description: "A test pattern",
            views: 2,
            age_days: 3,
            ..Doc::default()
        },
        Doc {
            title: "Cats and dogs playing",
            age_days: 2,
            ..Doc::default()
        },
        Doc {
            title: "Dogs only",
            age_days: 2,
            ..Doc::default()
        },
        Doc {
            title: "Cats only",
            age_days: 2,
            ..Doc::default()
        },
        Doc {
            title: "<b>bold</b> & friends",
            age_days: 1,
            ..Doc::default()
        },
    ]
}

fn set(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}

/// Every hit of a search, following `next_cursor` with pages of 2.
async fn all_pages(env: &SearchEnv, q: &str, sort: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..50 {
        let mut query = vec![("q", q), ("sort", sort), ("limit", "2")];
        if let Some(c) = &cursor {
            query.push(("cursor", c.as_str()));
        }
        let page = env.search(&query).await;
        assert!(
            cursor.is_none() || page["facets"].is_null(),
            "later pages carry no facets"
        );
        out.extend(titles(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
    panic!("more than 50 pages")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relevance_typos_accents_phrases_prefixes_filters_and_pages() {
    relevance_and_more(&[]).await;
}

/// The same answers when every query but a prefix is looked up views band
/// by views band, the plan of common words in a large index (here the
/// window and the facet limit hold every match, so nothing may differ).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_views_band_plans_answer_the_same() {
    relevance_and_more(&[("VODFARM_SEARCH_BAND_THRESHOLD", "0".into())]).await;
}

/// Banded, relevance ranks the window of most viewed matches (whole
/// views bands: floor(log2(views + 1))) and the facets count them; the
/// other orders still see every match.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_common_word_is_ranked_and_counted_over_its_most_viewed_matches() {
    let mut env = SearchEnv::start(&[
        ("VODFARM_SEARCH_BAND_THRESHOLD", "0".into()),
        ("VODFARM_SEARCH_RANK_WINDOW", "2".into()),
        ("VODFARM_SEARCH_FACET_LIMIT", "2".into()),
    ])
    .await;
    env.insert(&corpus()).await;
    let quokkas: Vec<Doc> = [
        ("parade", 70, "Pets"),
        ("morning", 50, "Pets"),
        ("alone", 90, "Pets"),
    ]
    .into_iter()
    .chain([
        ("trip", 60, "Travel"),
        ("nap", 3, "Pets"),
        ("hop", 51, "Pets"),
    ])
    .map(|(t, views, c)| Doc {
        title: Box::leak(format!("Quokka {t}").into_boxed_str()),
        views,
        category: Some(c),
        ..Doc::default()
    })
    .collect();
    env.insert(&quokkas).await;
    env.start_indexer(500, &[]).await;
    env.wait_indexed().await;
    // By views in a category: band by band (90 and 70: band 6; 51 and
    // 50: band 5; 3: band 2), every match in order, page after page.
    let pets = [
        "Quokka alone",
        "Quokka parade",
        "Quokka hop",
        "Quokka morning",
        "Quokka nap",
    ];
    let q = [("q", "quokka "), ("category", "pets"), ("sort", "views")];
    assert_eq!(env.titles(&q).await, pets);
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = q.to_vec();
        query.push(("limit", "2"));
        if let Some(c) = &cursor {
            query.push(("cursor", c.as_str()));
        }
        let page = env.search(&query).await;
        paged.extend(titles(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(paged.len() <= pets.len(), "{paged:?}");
    }
    assert_eq!(paged, pets);
    // "guitar": 5000 views (band 12, description), 1000 (band 9, tag),
    // 300, 20 and 10 (titles). The window holds the first two; the tag
    // match outranks the description match.
    let page = env.search(&[("q", "guitar ")]).await;
    assert_eq!(titles(&page), ["Piano basics", "Cooking pasta"], "{page}");
    assert_eq!(
        page["total"],
        serde_json::json!({"value": 2, "relation": "gte"})
    );
    assert_eq!(
        page["facets"]["duration"],
        serde_json::json!([{"value": "short", "count": 2}, {"value": "medium", "count": 0},
                           {"value": "long", "count": 0}])
    );
    assert_eq!(all_pages(&env, "guitar ", "relevance").await.len(), 2);
    assert_eq!(
        env.titles(&[("q", "guitar "), ("sort", "views")])
            .await
            .len(),
        5
    );
    // A phrase looks among the first 4 × 2 candidates: all of them here.
    assert_eq!(
        env.titles(&[("q", "\"red guitar\"")]).await,
        ["Red guitar solo"]
    );
}

async fn relevance_and_more(api_env: &[(&'static str, String)]) {
    let mut env = SearchEnv::start(api_env).await;
    env.insert(&corpus()).await;
    env.start_indexer(500, &[]).await;
    env.wait_indexed().await;

    // Relevance: a title match outranks a tag match, which outranks a
    // description match, whatever their views.
    let guitar = env.titles(&[("q", "guitar ")]).await;
    assert_eq!(guitar.len(), 5, "{guitar:?}");
    assert_eq!(
        set(&guitar[..3]),
        set(&[
            "Guitar lesson for beginners".into(),
            "Red guitar solo".into(),
            "The guitar is red".into()
        ]),
        "{guitar:?}"
    );
    assert_eq!(guitar[3..], ["Piano basics", "Cooking pasta"], "{guitar:?}");
    // Stems: the plural finds the singular.
    assert_eq!(env.titles(&[("q", "guitars ")]).await.len(), 5);

    // Accents and case are folded both ways; highlights keep the original.
    for q in ["creme brulee", "CRÈME BRÛLÉE ", "crème"] {
        assert_eq!(
            env.titles(&[("q", q)]).await,
            ["Crème brûlée at home"],
            "{q}"
        );
    }
    let page = env.search(&[("q", "creme ")]).await;
    assert_eq!(
        page["hits"][0]["title_html"],
        "<mark>Crème</mark> brûlée at home"
    );

    // Quoted phrases need the words together, in order.
    assert_eq!(
        env.titles(&[("q", "\"red guitar\"")]).await,
        ["Red guitar solo"]
    );
    assert_eq!(
        env.strict(&[("q", "\"guitar red\"")]).await,
        Vec::<String>::new()
    );

    // The last word is a prefix while it is being typed.
    assert!(env
        .titles(&[("q", "guita")])
        .await
        .contains(&"Guitar lesson for beginners".to_owned()));
    assert_eq!(env.titles(&[("q", "vodfarm dem")]).await, ["vodfarm demo"]);
    assert_eq!(
        env.strict(&[("q", "vodfarm dem ")]).await,
        Vec::<String>::new()
    );

    // A typo: nothing matches word for word, similar titles answer.
    let typo = env.search(&[("q", "gitar lesson")]).await;
    assert_eq!(typo["typo"], true, "{typo}");
    assert_eq!(titles(&typo)[0], "Guitar lesson for beginners", "{typo}");
    assert_eq!(
        typo["hits"][0]["title_html"], "<mark>Guitar</mark> <mark>lesson</mark> for beginners",
        "the words it was taken for are marked"
    );
    let exact = env.search(&[("q", "guitar lesson")]).await;
    assert_eq!(exact["typo"], false);

    // or, and -exclusions.
    assert_eq!(
        set(&env.titles(&[("q", "cats or dogs ")]).await),
        set(&[
            "Cats and dogs playing".into(),
            "Dogs only".into(),
            "Cats only".into()
        ])
    );
    assert_eq!(env.titles(&[("q", "cats -dogs ")]).await, ["Cats only"]);

    // Filters (case-insensitive category and tag), and facets that each
    // ignore their own filter.
    assert_eq!(
        env.titles(&[("q", "guitar "), ("category", "music")]).await,
        ["Red guitar solo"]
    );
    assert_eq!(
        env.titles(&[("q", "guitar "), ("duration", "long")]).await,
        ["The guitar is red"]
    );
    assert_eq!(
        env.titles(&[("q", "guitar "), ("tag", "ROCK")]).await,
        ["Red guitar solo"]
    );
    assert_eq!(
        env.titles(&[("q", "guitar "), ("channel", "c_nosuchchannel00")])
            .await,
        Vec::<String>::new()
    );
    let (_, channel) = &env.channel;
    assert_eq!(
        env.titles(&[("q", "guitar "), ("channel", channel)])
            .await
            .len(),
        5
    );
    let after = (chrono::Utc::now() - chrono::Duration::days(6)).to_rfc3339();
    assert_eq!(
        set(&env
            .titles(&[("q", "guitar "), ("uploaded_after", &after)])
            .await),
        set(&["Red guitar solo".into(), "The guitar is red".into()])
    );
    let faceted = env.search(&[("q", "guitar "), ("category", "Music")]).await;
    assert_eq!(
        faceted["total"],
        serde_json::json!({"value": 1, "relation": "eq"})
    );
    assert_eq!(
        faceted["facets"]["category"],
        serde_json::json!([{"value": "Music", "count": 1}]),
        "videos without a category are not a facet value"
    );
    assert_eq!(
        faceted["facets"]["duration"],
        serde_json::json!([{"value": "short", "count": 1}, {"value": "medium", "count": 0},
                           {"value": "long", "count": 0}]),
        "the duration facet applies the category filter"
    );
    let all = env.search(&[("q", "guitar "), ("duration", "short")]).await;
    assert_eq!(all["total"]["value"], 4);
    assert_eq!(
        all["facets"]["duration"],
        serde_json::json!([{"value": "short", "count": 4}, {"value": "medium", "count": 0},
                           {"value": "long", "count": 1}]),
        "the duration facet ignores the duration filter"
    );

    // Orders, and keyset pages that return every hit exactly once.
    assert_eq!(
        env.titles(&[("q", "guitar "), ("sort", "views")]).await,
        [
            "Cooking pasta",
            "Piano basics",
            "Red guitar solo",
            "The guitar is red",
            "Guitar lesson for beginners"
        ]
    );
    assert_eq!(
        env.titles(&[("q", "guitar "), ("sort", "newest")]).await,
        [
            "The guitar is red",
            "Red guitar solo",
            "Cooking pasta",
            "Piano basics",
            "Guitar lesson for beginners"
        ]
    );
    for sort in ["relevance", "views", "newest"] {
        let paged = all_pages(&env, "guitar ", sort).await;
        let whole = env.titles(&[("q", "guitar "), ("sort", sort)]).await;
        assert_eq!(paged, whole, "pages of {sort}");
    }
    let typo_paged = all_pages(&env, "gitar lesson", "relevance").await;
    assert_eq!(typo_paged[0], "Guitar lesson for beginners");

    // Hits carry what a result list shows; HTML in titles is escaped.
    let hit = &env.search(&[("q", "vodfarm demo")]).await["hits"][0];
    assert_eq!(hit["channel"]["name"], "Alice Makes Music");
    assert_eq!(hit["channel"]["channel_id"], env.channel.1.as_str());
    assert_eq!(hit["view_count"], 2);
    assert_eq!(hit["duration_seconds"], 60);
    assert!(hit["thumbnail_url"].is_null(), "no thumbnail was made");
    assert!(hit["uploaded_at"].is_string());
    let bold = env.search(&[("q", "bold")]).await;
    assert_eq!(
        bold["hits"][0]["title_html"],
        "&lt;b&gt;<mark>bold</mark>&lt;/b&gt; &amp; friends"
    );

    // As-you-type suggestions: titles only, most viewed first.
    let (status, s) = env.get("/v1/search/suggest", &[("q", "vodfarm dem")]).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["suggestions"][0]["title"], "vodfarm demo");
    assert_eq!(
        s["suggestions"][0]["title_html"],
        "<mark>vodfarm</mark> <mark>demo</mark>"
    );
    assert_eq!(
        env.suggested("guit").await,
        [
            "Red guitar solo",
            "The guitar is red",
            "Guitar lesson for beginners"
        ],
        "a tag or description match is no title suggestion"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_and_private_videos_are_never_answered_even_with_the_indexer_stopped() {
    let mut env = SearchEnv::start(&[]).await;
    let ids = env
        .insert(&[
            Doc {
                title: "Secret recipe one",
                ..Doc::default()
            },
            Doc {
                title: "Secret recipe two",
                ..Doc::default()
            },
            Doc {
                title: "Secret recipe three",
                ..Doc::default()
            },
            Doc {
                title: "Secret recipe four",
                ..Doc::default()
            },
        ])
        .await;
    env.start_indexer(500, &[]).await;
    env.wait_indexed().await;
    assert_eq!(env.titles(&[("q", "secret recipe")]).await.len(), 4);
    let stopped = env.indexer.as_mut().expect("indexer").stop();
    assert!(
        stopped.is_some_and(|s| s.success()),
        "clean stop: {stopped:?}"
    );

    // With no indexer running: delete one (the api's soft delete), make
    // one private and one unlisted.
    for (id, change) in ids.iter().zip([
        "status = 'deleted'",
        "privacy = 'private'",
        "privacy = 'unlisted'",
    ]) {
        let sql = format!("UPDATE videos SET {change} WHERE video_id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .execute(&env.db.pool)
            .await
            .expect("change");
    }
    let hidden_before = env.api_metric("vodfarm_search_hidden_hits_total").await;
    for q in ["secret recipe", "secret", "recip"] {
        assert_eq!(
            env.titles(&[("q", q)]).await,
            ["Secret recipe four"],
            "{q}: only the public ready video"
        );
    }
    for q in ["recipe one", "recipe two", "\"recipe three\""] {
        assert_eq!(env.titles(&[("q", q)]).await, Vec::<String>::new(), "{q}");
    }
    let (_, s) = env.get("/v1/search/suggest", &[("q", "secret rec")]).await;
    assert_eq!(s["suggestions"].as_array().map(Vec::len), Some(1), "{s}");
    // The index still holds them: the api's check is what kept them out.
    let stale: i64 = sqlx::query_scalar("SELECT count(*) FROM search_documents WHERE visible")
        .fetch_one(&env.db.pool)
        .await
        .expect("count");
    assert_eq!(stale, 4, "the index lags while no indexer runs");
    assert!(env.api_metric("vodfarm_search_hidden_hits_total").await > hidden_before);
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM search_outbox")
        .fetch_one(&env.db.pool)
        .await
        .expect("pending");
    assert_eq!(pending, 3, "each change waits in the outbox");

    // One indexer round later the index agrees.
    env.start_indexer(500, &[]).await;
    env.wait_indexed().await;
    let (index, table) = index_and_table(&env.db).await;
    assert_eq!(index, table);
    assert_eq!(index.len(), 1);
    let metrics = env.indexer.as_ref().expect("indexer").metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "vodfarm_search_changes_applied_total{effect=\"remove\"}"
        ),
        Some(3.0),
        "{metrics}"
    );

    // Back to public: findable again; a hard delete: gone.
    sqlx::query("UPDATE videos SET privacy = 'public' WHERE video_id = $1")
        .bind(&ids[1])
        .execute(&env.db.pool)
        .await
        .expect("public again");
    env.wait_indexed().await;
    assert_eq!(env.titles(&[("q", "secret recipe")]).await.len(), 2);
    sqlx::query("DELETE FROM videos WHERE video_id = $1")
        .bind(&ids[3])
        .execute(&env.db.pool)
        .await
        .expect("hard delete");
    env.wait_indexed().await;
    assert_eq!(
        env.titles(&[("q", "secret recipe")]).await,
        ["Secret recipe two"]
    );
    let (index, table) = index_and_table(&env.db).await;
    assert_eq!(index, table);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_search_shows_follows_every_change() {
    let mut env = SearchEnv::start(&[]).await;
    env.start_indexer(500, &[]).await;
    let ids = env
        .insert(&[Doc {
            title: "Sunset timelapse",
            tags: &["sky"],
            ..Doc::default()
        }])
        .await;
    env.wait_indexed().await;
    let changes = [
        (
            "title = 'Sunrise timelapse'",
            "sunrise",
            "Sunrise timelapse",
        ),
        (
            "description = 'over the harbour'",
            "harbour",
            "Sunrise timelapse",
        ),
        ("tags = ARRAY['clouds']", "clouds", "Sunrise timelapse"),
        ("category = 'Nature'", "sunrise", "Sunrise timelapse"),
    ];
    for (change, q, title) in changes {
        let sql = format!("UPDATE videos SET {change} WHERE video_id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&ids[0])
            .execute(&env.db.pool)
            .await
            .expect("change");
        env.wait_indexed().await;
        assert_eq!(env.titles(&[("q", q)]).await, [title], "after {change}");
    }
    assert_eq!(env.strict(&[("q", "sunset ")]).await, Vec::<String>::new());
    assert_eq!(
        env.titles(&[("q", "sunrise"), ("category", "nature")])
            .await
            .len(),
        1
    );
    // Counts when flushed: the views order follows.
    sqlx::query("UPDATE videos SET view_count = 99, like_count = 7 WHERE video_id = $1")
        .bind(&ids[0])
        .execute(&env.db.pool)
        .await
        .expect("counts");
    env.wait_indexed().await;
    let views: i64 = sqlx::query_scalar("SELECT view_count FROM search_documents")
        .fetch_one(&env.db.pool)
        .await
        .expect("views");
    assert_eq!(views, 99);
    // Progress updates and other columns search does not read write no
    // outbox row.
    sqlx::query(
        "UPDATE videos SET processing_progress = 50, source_width = 640 WHERE video_id = $1",
    )
    .bind(&ids[0])
    .execute(&env.db.pool)
    .await
    .expect("progress");
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM search_outbox")
        .fetch_one(&env.db.pool)
        .await
        .expect("pending");
    assert_eq!(pending, 0);
    // A channel renamed: its videos are found by the new name only.
    sqlx::query("UPDATE channels SET name = 'Harbour Films' WHERE id = $1")
        .bind(env.channel.0)
        .execute(&env.db.pool)
        .await
        .expect("rename");
    env.wait_indexed().await;
    assert_eq!(env.titles(&[("q", "harbour films")]).await.len(), 1);
    assert_eq!(env.strict(&[("q", "alice makes ")]).await.len(), 0);
    let hit = &env.search(&[("q", "sunrise")]).await["hits"][0];
    assert_eq!(hit["channel"]["name"], "Harbour Films");

    // A new video is findable as soon as it is ready and public; the
    // indexer's lag histogram records it.
    sqlx::query(
        "INSERT INTO videos (video_id, channel_id, title, status) VALUES ('v_lagprobe0000001', $1, 'Lag probe', 'processing')",
    )
    .bind(env.channel.0)
    .execute(&env.db.pool)
    .await
    .expect("processing video");
    let indexer = env.indexer.as_ref().expect("indexer");
    let before = metric(
        &indexer.metrics().await,
        "vodfarm_search_index_lag_seconds_count",
    )
    .unwrap_or(0.0);
    sqlx::query("UPDATE videos SET status = 'ready' WHERE video_id = 'v_lagprobe0000001'")
        .execute(&env.db.pool)
        .await
        .expect("ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.titles(&[("q", "lag probe")]).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "a ready video never became findable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = metric(
        &indexer.metrics().await,
        "vodfarm_search_index_lag_seconds_count",
    )
    .unwrap_or(0.0);
    assert_eq!(after, before + 1.0, "one change, one lag sample");
    let (index, table) = index_and_table(&env.db).await;
    assert_eq!(index, table);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_indexer_killed_mid_batch_and_racing_replicas_leave_the_index_equal_to_the_table() {
    let mut env = SearchEnv::start(&[]).await;
    let (other, _) = insert_channel(&env.db, "Second Channel").await;
    // 20,000 searchable videos in one statement: 20,000 outbox rows.
    sqlx::query(
        "INSERT INTO videos (video_id, channel_id, title, description, status, privacy, view_count)
         SELECT 'v_bulk' || lpad(g::text, 11, '0'), CASE WHEN g % 2 = 0 THEN $1 ELSE $2 END,
                'Bulk video ' || g, 'number ' || g, 'ready', 'public', g
         FROM generate_series(1, 20000) g",
    )
    .bind(env.channel.0)
    .bind(other)
    .execute(&env.db.pool)
    .await
    .expect("bulk insert");
    // Small batches, so a kill lands between and inside many of them.
    env.start_indexer(25, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM search_outbox")
            .fetch_one(&env.db.pool)
            .await
            .expect("left");
        if left < 19_000 {
            break;
        }
        assert!(Instant::now() < deadline, "the indexer made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    env.indexer.as_mut().expect("indexer").kill();
    // One snapshot: the killed process's last transaction may still be
    // committing or rolling back on the server, and either way its rows
    // move between the two tables together.
    let (left, applied): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM search_outbox), (SELECT count(*) FROM search_documents)",
    )
    .fetch_one(&env.db.pool)
    .await
    .expect("counts");
    assert!(left > 0, "killed mid-way (rows left: {left})");
    assert_eq!(
        applied + left,
        20_000,
        "each row is either applied (and gone) or still waiting: none lost, none half-applied"
    );

    // Two replicas race while the table keeps changing under them.
    let mut a =
        crate::search_support::IndexerProcess::start(&env.db.url, &["--batch-size", "25"], &[])
            .await;
    let mut b =
        crate::search_support::IndexerProcess::start(&env.db.url, &["--batch-size", "40"], &[])
            .await;
    for round in 0..20 {
        sqlx::query(
            "UPDATE videos SET title = 'Retitled ' || id || ' round ' || $1,
                               privacy = CASE WHEN id % 7 = $2 THEN 'private' ELSE 'public' END,
                               view_count = view_count + 1
             WHERE id % 20 = $2",
        )
        .bind(round)
        .bind(round % 7)
        .execute(&env.db.pool)
        .await
        .expect("changes");
        sqlx::query("UPDATE channels SET name = 'Second Channel ' || $1 WHERE id = $2")
            .bind(round)
            .bind(other)
            .execute(&env.db.pool)
            .await
            .expect("rename");
    }
    sqlx::query("UPDATE videos SET status = 'deleted' WHERE id % 13 = 0")
        .execute(&env.db.pool)
        .await
        .expect("deletes");
    env.wait_indexed().await;
    let (index, table) = index_and_table(&env.db).await;
    assert_eq!(index.len(), table.len());
    assert_eq!(index, table, "the index equals the table");
    let ma = a.metrics().await;
    let mb = b.metrics().await;
    let batches =
        |m: &str| metric(m, "vodfarm_search_batches_total{outcome=\"ok\"}").unwrap_or(0.0);
    assert!(
        batches(&ma) > 0.0 && batches(&mb) > 0.0,
        "both replicas worked"
    );
    assert_eq!(
        metric(&ma, "vodfarm_search_batches_total{outcome=\"error\"}"),
        Some(0.0)
    );

    // A replay (every searchable video's last change again) changes
    // nothing: same versions, same rows, not even rewritten.
    let before: Vec<(i64, i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT video_id, version, indexed_at FROM search_documents ORDER BY video_id",
    )
    .fetch_all(&env.db.pool)
    .await
    .expect("before");
    let replayed = sqlx::query(
        "INSERT INTO search_outbox (seq, video_id)
         SELECT search_version, id FROM videos WHERE search_version > 0",
    )
    .execute(&env.db.pool)
    .await
    .expect("replay")
    .rows_affected();
    assert!(replayed > 10_000);
    let skipped_before = metric(&ma, "vodfarm_search_changes_applied_total{effect=\"skip\"}")
        .unwrap_or(0.0)
        + metric(&mb, "vodfarm_search_changes_applied_total{effect=\"skip\"}").unwrap_or(0.0);
    env.wait_indexed().await;
    let after: Vec<(i64, i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT video_id, version, indexed_at FROM search_documents ORDER BY video_id",
    )
    .fetch_all(&env.db.pool)
    .await
    .expect("after");
    assert_eq!(before, after, "a replay rewrote documents");
    let skipped = metric(
        &a.metrics().await,
        "vodfarm_search_changes_applied_total{effect=\"skip\"}",
    )
    .unwrap_or(0.0)
        + metric(
            &b.metrics().await,
            "vodfarm_search_changes_applied_total{effect=\"skip\"}",
        )
        .unwrap_or(0.0);
    assert_eq!(skipped - skipped_before, replayed as f64);
    assert!(a.stop().is_some_and(|s| s.success()));
    assert!(b.stop().is_some_and(|s| s.success()));

    // `vodfarm search reindex` repairs an index that drifted (here: a
    // document edited behind the indexer's back, one removed).
    sqlx::query("UPDATE search_documents SET title = 'corrupted', version = 0 WHERE video_id = (SELECT min(video_id) FROM search_documents WHERE visible)")
        .execute(&env.db.pool)
        .await
        .expect("corrupt");
    sqlx::query("DELETE FROM search_documents WHERE video_id = (SELECT max(video_id) FROM search_documents WHERE visible)")
        .execute(&env.db.pool)
        .await
        .expect("lose");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vodfarm"))
        .args(["search", "reindex", "--database-url", &env.db.url])
        .env("RUST_LOG", "warn")
        .output()
        .expect("vodfarm search reindex");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("search reindexed: 2 document(s) in search_documents"),
        "{stdout}"
    );
    let (index, table) = index_and_table(&env.db).await;
    assert_eq!(index, table);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_a_clear_400_never_a_500() {
    let env = SearchEnv::start(&[]).await;
    let long = "a".repeat(201);
    let words = "w ".repeat(17);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![], "invalid_query"),
        (vec![("q", "")], "invalid_query"),
        (vec![("q", "   ")], "invalid_query"),
        (vec![("q", &long)], "invalid_query"),
        (vec![("q", &words)], "invalid_query"),
        (vec![("q", "'")], "invalid_query"),
        (vec![("q", "&")], "invalid_query"),
        (vec![("q", "!")], "invalid_query"),
        (vec![("q", ":*")], "invalid_query"),
        (vec![("q", "\\")], "invalid_query"),
        (vec![("q", "'&!:*\\|()<->")], "invalid_query"),
        (vec![("q", "-cats")], "invalid_query"),
        (vec![("q", "a\u{0}b")], "invalid_query"),
        (vec![("q", "x"), ("colour", "red")], "invalid_parameter"),
        (vec![("q", "x"), ("q", "y")], "invalid_parameter"),
        (vec![("q", "x"), ("sort", "random")], "invalid_query"),
        (vec![("q", "x"), ("duration", "1h")], "invalid_query"),
        (vec![("q", "x"), ("limit", "0")], "invalid_query"),
        (vec![("q", "x"), ("limit", "1000")], "invalid_query"),
        (vec![("q", "x"), ("limit", "ten")], "invalid_query"),
        (
            vec![("q", "x"), ("channel", "' OR 1=1 --")],
            "invalid_query",
        ),
        (
            vec![("q", "x"), ("uploaded_after", "soon")],
            "invalid_query",
        ),
        (vec![("q", "x"), ("cursor", "garbage")], "invalid_cursor"),
        (vec![("q", "x"), ("cursor", "eyJ2IjoxfQ")], "invalid_cursor"),
    ];
    for (query, code) in &cases {
        let (status, body) = env.get("/v1/search", query).await;
        assert_eq!(status, 400, "{query:?}: {body}");
        assert_eq!(body["error"]["code"], *code, "{query:?}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.len() > 5),
            "{query:?}: {body}"
        );
    }
    // Query-language syntax around real words is only punctuation.
    for q in [
        "rock & roll",
        "it's",
        "a:* b",
        "x' OR '1'='1",
        "\\x",
        "(cats)",
        "c++",
    ] {
        let (status, body) = env.get("/v1/search", &[("q", q)]).await;
        assert_eq!(status, 200, "{q}: {body}");
    }
    // Only stop words: nothing to find, and no error.
    let (status, body) = env.get("/v1/search", &[("q", "the of and ")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hits"], serde_json::json!([]));
    // A cursor of one search does not continue another.
    env.insert(&[
        Doc {
            title: "Alpha one",
            ..Doc::default()
        },
        Doc {
            title: "Alpha two",
            ..Doc::default()
        },
    ])
    .await;
    let mut env = env;
    env.start_indexer(500, &[]).await;
    env.wait_indexed().await;
    let page = env.search(&[("q", "alpha "), ("limit", "1")]).await;
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (status, body) = env
        .get(
            "/v1/search",
            &[("q", "alpha "), ("sort", "views"), ("cursor", &cursor)],
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, Value::from("invalid_cursor"))
    );
    let (status, _) = env
        .get(
            "/v1/search",
            &[("q", "alpha "), ("limit", "1"), ("cursor", &cursor)],
        )
        .await;
    assert_eq!(status, 200);
    // Suggest checks its parameters too.
    for query in [
        vec![],
        vec![("q", "'")],
        vec![("q", "a"), ("sort", "x")],
        vec![("q", "a"), ("limit", "21")],
    ] {
        let (status, body) = env.get("/v1/search/suggest", &query).await;
        assert_eq!(status, 400, "{query:?}: {body}");
    }
    assert_eq!(
        env.api_metric("vodfarm_search_requests_total{route=\"search\",outcome=\"error\"}")
            .await,
        0.0
    );
}

/// Elasticsearch, when one is configured: the same behaviour through the
/// `elasticsearch` crate, and `vodfarm search reindex` swapping the alias
/// while searches keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn elasticsearch_when_configured() {
    let Ok(url) = std::env::var("ELASTICSEARCH_URL") else {
        println!(
            "NOT RUN: search::elasticsearch_when_configured needs ELASTICSEARCH_URL \
             (no Elasticsearch server here); its request bodies are unit-tested in \
             search/src/elastic/"
        );
        return;
    };
    let alias = format!("vodfarm-test-{}", uuid::Uuid::new_v4().simple());
    let es_env = [
        ("ELASTICSEARCH_URL", url.clone()),
        ("VODFARM_ELASTICSEARCH_INDEX", alias.clone()),
    ];
    let mut env = SearchEnv::start(&es_env).await;
    let ids = env.insert(&corpus()).await;
    let pairs: Vec<(&str, &str)> = es_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.start_indexer(100, &pairs).await;
    env.wait_indexed().await;
    // Elasticsearch makes writes searchable at its next refresh.
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.titles(&[("q", "guitar ")]).await.len() < 5 {
        assert!(
            Instant::now() < deadline,
            "documents never became searchable"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let guitar = env.titles(&[("q", "guitar ")]).await;
    assert_eq!(guitar[3..], ["Piano basics", "Cooking pasta"], "{guitar:?}");
    assert_eq!(
        env.titles(&[("q", "creme brulee ")]).await,
        ["Crème brûlée at home"]
    );
    assert_eq!(
        env.titles(&[("q", "\"red guitar\"")]).await,
        ["Red guitar solo"]
    );
    assert_eq!(env.titles(&[("q", "vodfarm dem")]).await, ["vodfarm demo"]);
    let typo = env.search(&[("q", "gitar lesson ")]).await;
    assert_eq!(typo["typo"], true);
    assert_eq!(titles(&typo)[0], "Guitar lesson for beginners");
    assert_eq!(env.titles(&[("q", "cats -dogs ")]).await, ["Cats only"]);
    for sort in ["relevance", "views", "newest"] {
        let paged = all_pages(&env, "guitar ", sort).await;
        let whole = env.titles(&[("q", "guitar "), ("sort", sort)]).await;
        assert_eq!(paged, whole, "pages of {sort}");
    }
    let faceted = env.search(&[("q", "guitar "), ("duration", "short")]).await;
    assert_eq!(faceted["total"]["value"], 4);
    // Hidden at once with the indexer stopped.
    env.indexer.as_mut().expect("indexer").stop();
    sqlx::query("UPDATE videos SET privacy = 'private' WHERE video_id = $1")
        .bind(&ids[6])
        .execute(&env.db.pool)
        .await
        .expect("private");
    assert_eq!(
        env.titles(&[("q", "vodfarm demo")]).await,
        Vec::<String>::new()
    );
    env.start_indexer(100, &pairs).await;
    env.wait_indexed().await;
    // Reindex into a new index and swap the alias while searching.
    let searching = {
        let base = env.api.base.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut failures = 0;
            for _ in 0..200 {
                let r = http
                    .get(format!("{base}/v1/search"))
                    .query(&[("q", "guitar ")])
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        if v["hits"].as_array().map_or(0, Vec::len) != 5 {
                            failures += 1;
                        }
                    }
                    _ => failures += 1,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            failures
        })
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vodfarm"))
        .args(["search", "reindex", "--database-url", &env.db.url])
        .envs(es_env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("reindex");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("replaced"));
    assert_eq!(
        searching.await.expect("searches"),
        0,
        "searches failed during the swap"
    );
}

/// Documents written straight with SQL by several channels stay apart in
/// the channel filter, and the fuzzing of the api covers the search
/// routes (`api::schemathesis_finds_no_server_errors` asserts they were
/// hit); this checks the documented OpenAPI parameters are the ones the
/// routes accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_documented_parameters_are_the_accepted_ones() {
    let doc: Value = serde_json::from_str(include_str!("../../src/openapi.json")).expect("openapi");
    let params = |path: &str| -> Vec<String> {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(params("/v1/search"), vodfarm_search::query::SEARCH_PARAMS);
    assert_eq!(
        params("/v1/search/suggest"),
        vodfarm_search::query::SUGGEST_PARAMS
    );
    let mut env = SearchEnv::start(&[]).await;
    let (other, other_pub) = insert_channel(&env.db, "Other").await;
    insert_videos(
        &env.db,
        other,
        &[Doc {
            title: "Shared words",
            ..Doc::default()
        }],
    )
    .await;
    env.insert(&[Doc {
        title: "Shared words",
        ..Doc::default()
    }])
    .await;
    env.start_indexer(500, &[]).await;
    env.wait_indexed().await;
    assert_eq!(env.titles(&[("q", "shared words")]).await.len(), 2);
    let only = env
        .search(&[("q", "shared words"), ("channel", &other_pub)])
        .await;
    assert_eq!(only["hits"].as_array().map(Vec::len), Some(1));
    assert_eq!(only["hits"][0]["channel"]["channel_id"], other_pub.as_str());
}

/// The api's answer cache lookups of `route` with `result` (hit, miss).
async fn cache_lookups(env: &SearchEnv, route: &str, result: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", env.api.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with("vodfarm_search_cache_requests_total{"))
        .filter(|l| {
            l.contains(&format!("route=\"{route}\"")) && l.contains(&format!("result=\"{result}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A cached answer is the index's candidates only: each request still
/// checks them against `videos`, so what was deleted or privated after
/// the answer was cached is never shown, and what a hit shows (title,
/// channel, views) is the table's current state. A cached answer does
/// lag for new videos, up to the TTL (an hour here: it never expires
/// during the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cached_answer_never_shows_what_was_deleted_or_privated() {
    let mut env = SearchEnv::start(&[("VODFARM_SEARCH_CACHE_TTL", "1h".into())]).await;
    let docs: Vec<Doc> = ["one", "two", "three"]
        .into_iter()
        .map(|n| Doc {
            title: Box::leak(format!("Cached secret {n}").into_boxed_str()),
            ..Doc::default()
        })
        .collect();
    let ids = env.insert(&docs).await;
    env.start_indexer(500, &[]).await;
    env.wait_indexed().await;
    let q = [("q", "cached secret ")];
    assert_eq!(env.titles(&q).await.len(), 3);
    let (_, s) = env.get("/v1/search/suggest", &[("q", "cached sec")]).await;
    assert_eq!(s["suggestions"].as_array().map(Vec::len), Some(3), "{s}");
    let search_hits = cache_lookups(&env, "search", "hit").await;
    let suggest_hits = cache_lookups(&env, "suggest", "hit").await;

    // Deleted, privated and renamed while the answers are cached (the
    // indexer keeps running: the index drops them, the cache does not).
    for (id, change) in ids.iter().zip([
        "status = 'deleted'",
        "privacy = 'private'",
        "title = 'Cached secret three, renamed'",
    ]) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE videos SET {change} WHERE video_id = $1"
        )))
        .bind(id)
        .execute(&env.db.pool)
        .await
        .expect("change");
    }
    env.wait_indexed().await;
    let page = env.search(&q).await;
    assert_eq!(
        titles(&page),
        ["Cached secret three, renamed"],
        "only the public video, as the table has it now: {page}"
    );
    assert_eq!(
        env.suggested("cached sec").await,
        ["Cached secret three, renamed"]
    );
    assert_eq!(
        cache_lookups(&env, "search", "hit").await,
        search_hits + 1.0,
        "the search was answered from the cache"
    );
    assert_eq!(
        cache_lookups(&env, "suggest", "hit").await,
        suggest_hits + 1.0,
        "the suggestion too"
    );

    // A new video: missing from the cached answer until its TTL ends
    // (the documented staleness), found by any other request.
    env.insert(&[Doc {
        title: "Cached secret four",
        ..Doc::default()
    }])
    .await;
    env.wait_indexed().await;
    assert_eq!(env.titles(&q).await.len(), 1, "the cached answer");
    assert_eq!(
        set(&env.titles(&[("q", "cached secret "), ("limit", "5")]).await),
        set(&[
            "Cached secret three, renamed".into(),
            "Cached secret four".into()
        ])
    );
}

/// A word being typed whose prefix many documents hold, after a rare
/// word: the rare word's documents are the candidates, each checked
/// against the whole query (the planner's statistics say so once the
/// table is analyzed). The answers are those of the whole query.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rare_word_finds_the_candidates_of_a_common_prefix() {
    let mut env = SearchEnv::start(&[]).await;
    let mut docs: Vec<Doc> = (0..50)
        .map(|i| Doc {
            title: Box::leak(format!("Zorkmid story {i}").into_boxed_str()),
            views: i,
            ..Doc::default()
        })
        .collect();
    for (title, views, category) in [
        ("Quokka zorkmid parade", 70, "Pets"),
        ("Quokka zorkish morning", 50, "Pets"),
        ("Quokka jumps over zorkian hills", 60, "Travel"),
        ("Quokka alone", 90, "Pets"),
    ] {
        docs.push(Doc {
            title,
            views,
            category: Some(category),
            ..Doc::default()
        });
    }
    env.insert(&docs).await;
    env.start_indexer(500, &[]).await;
    env.wait_indexed().await;
    sqlx::query("ANALYZE search_documents")
        .execute(&env.db.pool)
        .await
        .expect("analyze");

    let page = env.search(&[("q", "quokka zork")]).await;
    assert_eq!(
        set(&titles(&page)),
        set(&[
            "Quokka zorkmid parade".into(),
            "Quokka zorkish morning".into(),
            "Quokka jumps over zorkian hills".into()
        ]),
        "{page}"
    );
    assert_eq!(
        page["total"],
        serde_json::json!({"value": 3, "relation": "eq"})
    );
    assert_eq!(
        page["facets"]["category"],
        serde_json::json!([{"value": "Pets", "count": 2}, {"value": "Travel", "count": 1}])
    );
    assert_eq!(
        env.titles(&[("q", "quokka zork"), ("sort", "views")]).await,
        [
            "Quokka zorkmid parade",
            "Quokka jumps over zorkian hills",
            "Quokka zorkish morning"
        ]
    );
    assert_eq!(all_pages(&env, "quokka zork", "relevance").await.len(), 3);
    assert_eq!(
        env.titles(&[("q", "quokka zork"), ("category", "travel")])
            .await,
        ["Quokka jumps over zorkian hills"]
    );
    assert_eq!(
        env.titles(&[("q", "\"quokka jumps\" zork")]).await,
        ["Quokka jumps over zorkian hills"]
    );
    assert_eq!(
        env.titles(&[("q", "quokka zorkmid par")]).await,
        ["Quokka zorkmid parade"]
    );
    assert!(env.strict(&[("q", "quokka zorx")]).await.is_empty());
    // The prefix alone is the whole query: the index answers it (the
    // prefix is stemmed like any word: zorkis -> zorki).
    assert_eq!(
        set(&env.titles(&[("q", "zorkis")]).await),
        set(&[
            "Quokka zorkish morning".into(),
            "Quokka jumps over zorkian hills".into()
        ])
    );
}
