//! The catalog's HTTP routes. Uploads live in the coordinator crate.

use crate::state::CatalogState;
use crate::{
    accounts, beacons, channels, history, likes, passwords, related, subtitles, tokens, videos,
    webhooks,
};
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;

/// The routes: `/v1/users`, `/v1/tokens…`, `/v1/me/password`,
/// `/v1/channels…`, `GET|PATCH|DELETE /v1/videos/{video_id}`,
/// `GET /v1/videos/{video_id}/subtitles`,
/// `PUT|DELETE /v1/videos/{video_id}/subtitles/{lang}`,
/// `POST|GET /v1/webhooks`, `GET|PATCH|DELETE /v1/webhooks/{webhook_id}`,
/// `GET /v1/webhooks/{webhook_id}/deliveries`,
/// `POST /v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay`;
/// analytics:
/// `POST /v1/videos/{video_id}/beacons`, `PUT|DELETE
/// /v1/videos/{video_id}/like`, `PUT|DELETE
/// /v1/channels/{channel_id}/subscription`, `GET
/// /v1/me/subscriptions/videos`, `GET|DELETE /v1/me/history`, `GET
/// /v1/me/continue-watching`, `GET /v1/videos/{video_id}/related`, `GET
/// /v1/me/recommendations`.
pub fn router(state: CatalogState) -> Router {
    Router::new()
        .route("/v1/users", post(accounts::create_user))
        .route(
            "/v1/tokens",
            post(accounts::create_token).get(tokens::list_tokens),
        )
        .route("/v1/tokens/current", delete(tokens::log_out))
        .route("/v1/tokens/{token_id}", delete(tokens::revoke_token))
        .route("/v1/me/password", put(passwords::change_password))
        .route("/v1/channels", post(channels::create_channel))
        .route("/v1/channels/{channel_id}", get(channels::get_channel))
        .route(
            "/v1/channels/{channel_id}/videos",
            get(channels::channel_videos),
        )
        .route(
            "/v1/videos/{video_id}",
            get(videos::get_video)
                .patch(videos::patch_video)
                .delete(videos::delete_video),
        )
        .route(
            "/v1/videos/{video_id}/subtitles",
            get(subtitles::list_subtitles),
        )
        .route(
            "/v1/videos/{video_id}/subtitles/{lang}",
            put(subtitles::put_subtitle).delete(subtitles::delete_subtitle),
        )
        .route(
            "/v1/webhooks",
            post(webhooks::create_webhook).get(webhooks::list_webhooks),
        )
        .route(
            "/v1/webhooks/{webhook_id}",
            get(webhooks::get_webhook)
                .patch(webhooks::patch_webhook)
                .delete(webhooks::delete_webhook),
        )
        .route(
            "/v1/webhooks/{webhook_id}/deliveries",
            get(webhooks::list_deliveries),
        )
        .route(
            "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay",
            post(webhooks::replay_delivery),
        )
        .route(
            "/v1/videos/{video_id}/beacons",
            post(beacons::post_beacons).layer(DefaultBodyLimit::max(beacons::MAX_BODY)),
        )
        .route(
            "/v1/videos/{video_id}/like",
            put(likes::like).delete(likes::unlike),
        )
        .route(
            "/v1/channels/{channel_id}/subscription",
            put(likes::subscribe).delete(likes::unsubscribe),
        )
        .route(
            "/v1/me/subscriptions/videos",
            get(likes::subscription_videos),
        )
        .route(
            "/v1/me/history",
            get(history::history).delete(history::erase_history),
        )
        .route("/v1/me/continue-watching", get(history::continue_watching))
        .route("/v1/videos/{video_id}/related", get(related::related))
        .route("/v1/me/recommendations", get(related::recommendations))
        .with_state(state)
}
