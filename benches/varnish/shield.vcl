# The Varnish peer of `cargo bench --bench origin`: a caching proxy in
# front of the bench's shared upstream, configured like the nginx peer.
# The bench replaces UPSTREAM_PORT before loading it with `varnishd -f`.
#
# Everything else is Varnish's built-in VCL on purpose: objects live as
# long as the upstream's Cache-Control says (segments immutable for a
# year, playlists max-age 10 s with stale-while-revalidate as grace),
# concurrent misses for one object wait on a single fetch (the waiting
# list, Varnish's proxy_cache_lock), and bodies stream to every waiter
# while that fetch is still running.
vcl 4.1;

backend upstream {
    .host = "127.0.0.1";
    .port = "UPSTREAM_PORT";
}

sub vcl_recv {
    # Readiness probe for the bench, answered without the upstream.
    if (req.url == "/varnish_health") {
        return (synth(200, "ok"));
    }
}
