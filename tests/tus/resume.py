"""tuspy (a stock tus client) uploads a file in 5 MiB chunks through
tus creation; the test kills and restarts the api in the middle of a
PATCH; tuspy then resumes from the offset the server reports.

argv: api_base user_token file channel_id
Talks to the test over stdout (progress lines) and stdin ("go")."""

import http.client
import sys
import urllib.parse

from tusclient import client

api, token, path, channel = sys.argv[1:5]
CHUNK = 5 * 1024 * 1024

c = client.TusClient(api + "/v1/uploads", headers={"Authorization": "Bearer " + token})
up = c.uploader(
    file_path=path,
    chunk_size=CHUNK,
    metadata={"filename": "source.mp4", "title": "Resumed upload", "channel_id": channel},
    upload_checksum=True,
)
for _ in range(3):
    up.upload_chunk()
    print("offset", up.offset, flush=True)
print("url", up.url, flush=True)

# A PATCH that stops halfway: the api is killed while it holds the body.
u = urllib.parse.urlparse(up.url)
with open(path, "rb") as f:
    f.seek(up.offset)
    data = f.read(CHUNK)


def body():
    yield data[: CHUNK // 2]
    print("midway", flush=True)
    sys.stdin.readline()
    yield data[CHUNK // 2 :]


conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
try:
    conn.request(
        "PATCH",
        u.path,
        body=body(),
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": str(up.offset),
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(len(data)),
            "Authorization": "Bearer " + token,
        },
    )
    print("interrupted-status", conn.getresponse().status, flush=True)
except Exception as e:  # the api died under us: expected
    print("interrupted-error", type(e).__name__, flush=True)

up2 = c.uploader(file_path=path, url=up.url, chunk_size=CHUNK, upload_checksum=True)
print("resumed-at", up2.offset, flush=True)
up2.upload()
print("done", up2.offset, flush=True)
