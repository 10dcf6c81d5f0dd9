vcl 4.1;

# vodfarm's CDN edge on Varnish (Debian's varnish 7.x), in front of the
# shield origin (or an origin). What it relies on, all sent by the origin:
#
# - Cache-Control decides what is kept and for how long (Varnish's
#   built-in rules honour it): segments and images `public,
#   max-age=31536000, immutable`; playlists a short max-age with
#   stale-while-revalidate; private videos `private` and every error
#   `no-store` (never kept).
# - Surrogate-Key: video-{id} tags every object of a video. `vodfarm
#   purger` (VODFARM_PURGE_URLS=http://this-edge:6081) sends
#   `PURGE /` with `Surrogate-Key: video-{id}` whenever a video is
#   deleted, made private, stops being ready or is re-encoded; this VCL
#   bans every object carrying that key. The ban only tests obj.*, so
#   Varnish's ban lurker frees banned objects in the background.
# - PURGE is accepted only from the `purgers` ACL (loopback by default:
#   add the purger's addresses).
#
# Set the backend to your shield (or origin) before deploying.

import std;

backend shield {
    .host = "127.0.0.1";
    .port = "8084";
    .connect_timeout = 2s;
    .first_byte_timeout = 15s;
    .between_bytes_timeout = 15s;
}

acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(405, "PURGE is not allowed from this address"));
        }
        # One or more keys, space separated, each `video-{public id}`:
        # nothing else can reach the ban expression.
        if (req.http.Surrogate-Key !~ "^video-[A-Za-z0-9_-]{1,50}( video-[A-Za-z0-9_-]{1,50})*$") {
            return (synth(400, "PURGE needs Surrogate-Key: video-{id}"));
        }
        if (std.ban("obj.http.Surrogate-Key ~ (^|\s)(" +
                regsuball(req.http.Surrogate-Key, " ", "|") + ")(\s|$)")) {
            return (synth(200, "Purged"));
        }
        return (synth(500, "Ban failed: " + std.ban_error()));
    }
    if (req.method != "GET" && req.method != "HEAD") {
        # CORS preflights and anything else: straight to the origin.
        return (pass);
    }
    # Answers depend on neither cookies nor credentials.
    unset req.http.Cookie;
    unset req.http.Authorization;
    return (hash);
}

sub vcl_backend_response {
    # The built-in rules follow Cache-Control (private, no-store and
    # max-age included). Stale objects are kept for as long as the
    # origin's stale-while-revalidate allows, for at least 10 s.
    if (beresp.grace < 10s) {
        set beresp.grace = 10s;
    }
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
    # The keys are for purging, not for viewers (as CDNs do).
    unset resp.http.Surrogate-Key;
    unset resp.http.Cache-Tag;
}
