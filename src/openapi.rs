//! The OpenAPI 3 document of `vodfarm api`, served at `/v1/openapi.json`.
//!
//! Hand-written (`src/openapi.json`) and kept honest by tests: every
//! route the api serves is documented (the unit test below), and
//! schemathesis fuzzes the running api from it (`tests/api.rs`).

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route and method the api serves, as the routers declare them.
    const ROUTES: &[(&str, &[&str])] = &[
        ("/v1/users", &["post"]),
        ("/v1/tokens", &["post"]),
        ("/v1/channels", &["post"]),
        ("/v1/channels/{channel_id}", &["get"]),
        ("/v1/channels/{channel_id}/videos", &["get"]),
        ("/v1/videos", &["post"]),
        ("/v1/videos/{video_id}", &["get", "patch", "delete"]),
        ("/v1/uploads", &["post", "options"]),
        (
            "/v1/uploads/{upload_id}",
            &["options", "head", "patch", "delete", "post"],
        ),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
        ("/v1/openapi.json", &["get"]),
    ];

    #[test]
    fn documents_every_route() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.0.3");
        let paths = doc["paths"].as_object().expect("paths");
        for (path, methods) in ROUTES {
            for m in *methods {
                assert!(
                    paths.get(*path).and_then(|p| p.get(*m)).is_some(),
                    "{m} {path} is not documented"
                );
            }
        }
        assert_eq!(
            paths.len(),
            ROUTES.len(),
            "documented routes that do not exist"
        );
    }
}
