//! The OpenAPI 3 document of `vodfarm api`, served at `/v1/openapi.json`.
//!
//! Hand-written (`src/openapi.json`) and kept exact by tests: every
//! route the api serves is documented and every link and reference
//! resolves (the unit tests below), and schemathesis runs every check but
//! `positive_data_acceptance` through all its phases against the running
//! api (`tests/it/api.rs`): what the document forbids the api refuses,
//! and what the api answers the document describes.

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route and method the api serves, as the routers declare them.
    const ROUTES: &[(&str, &[&str])] = &[
        ("/v1/users", &["post"]),
        ("/v1/tokens", &["post", "get"]),
        ("/v1/tokens/current", &["delete"]),
        ("/v1/tokens/{token_id}", &["delete"]),
        ("/v1/me/password", &["put"]),
        ("/v1/channels", &["post"]),
        ("/v1/channels/{channel_id}", &["get"]),
        ("/v1/channels/{channel_id}/videos", &["get"]),
        ("/v1/videos", &["post"]),
        ("/v1/videos/{video_id}", &["get", "patch", "delete"]),
        ("/v1/videos/{video_id}/subtitles", &["get"]),
        ("/v1/videos/{video_id}/subtitles/{lang}", &["put", "delete"]),
        ("/v1/uploads", &["post", "options"]),
        (
            "/v1/uploads/{upload_id}",
            &["options", "head", "patch", "delete", "post"],
        ),
        ("/v1/webhooks", &["post", "get"]),
        ("/v1/webhooks/{webhook_id}", &["get", "patch", "delete"]),
        ("/v1/webhooks/{webhook_id}/deliveries", &["get"]),
        (
            "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay",
            &["post"],
        ),
        ("/v1/videos/{video_id}/beacons", &["post"]),
        ("/v1/videos/{video_id}/like", &["put", "delete"]),
        ("/v1/channels/{channel_id}/subscription", &["put", "delete"]),
        ("/v1/me/subscriptions/videos", &["get"]),
        ("/v1/me/history", &["get", "delete"]),
        ("/v1/me/continue-watching", &["get"]),
        ("/v1/videos/{video_id}/related", &["get"]),
        ("/v1/me/recommendations", &["get"]),
        ("/v1/search", &["get"]),
        ("/v1/search/suggest", &["get"]),
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

    /// Every `$ref` points into the document, and every link names an
    /// operation and parameters it has (schemathesis' stateful phase
    /// follows them).
    #[test]
    fn references_and_links_resolve() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        fn refs<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(serde_json::Value::String(r)) = m.get("$ref") {
                        out.push(r);
                    }
                    m.values().for_each(|x| refs(x, out));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for r in all {
            let pointer = r.strip_prefix('#').expect("local $ref");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
        let mut operations = std::collections::HashMap::new();
        for item in doc["paths"].as_object().expect("paths").values() {
            for op in item.as_object().expect("path item").values() {
                let params: Vec<&str> = op["parameters"]
                    .as_array()
                    .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
                    .unwrap_or_default();
                operations.insert(op["operationId"].as_str().expect("operationId"), params);
            }
        }
        let mut links = 0;
        for item in doc["paths"].as_object().expect("paths").values() {
            for op in item.as_object().expect("path item").values() {
                for resp in op["responses"].as_object().expect("responses").values() {
                    for link in resp["links"]
                        .as_object()
                        .into_iter()
                        .flat_map(|l| l.values())
                    {
                        let target = link["operationId"].as_str().expect("operationId");
                        let params = operations
                            .get(target)
                            .unwrap_or_else(|| panic!("link to unknown operation {target}"));
                        for name in link["parameters"].as_object().expect("parameters").keys() {
                            assert!(params.contains(&name.as_str()), "{target} has no {name}");
                        }
                        links += 1;
                    }
                }
            }
        }
        assert!(links > 0, "no links");
    }
}
