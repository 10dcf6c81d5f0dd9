"""tuspy (a stock tus client) uploads a whole file to an upload that
`POST /v1/videos` created, in chunks, with checksums.

argv: upload_url upload_token file chunk_bytes
Prints "done OFFSET" once the last byte is stored."""

import sys

from tusclient import client

url, token, path, chunk = sys.argv[1:5]

c = client.TusClient(url, headers={"Authorization": "Bearer " + token})
up = c.uploader(file_path=path, url=url, chunk_size=int(chunk), upload_checksum=True)
up.upload()
print("done", up.offset, flush=True)
