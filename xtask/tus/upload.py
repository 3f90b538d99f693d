"""Uploads files to plugs-api with tuspy (tus-py-client), unchanged, for `cargo xtask ci tus`.

    upload.py ENDPOINT CHUNK_SIZE FILE... [--cut-every BYTES]

The bearer token comes from $TUS_TOKEN. Prints one line per file: `PATH MEDIA_ID`, the media id
the server named in `Upload-Media-Id` of its last answer.

With --cut-every, the uploads go through a proxy on localhost that cuts the connection each time
about BYTES more bytes (0.5 to 1.5 times, at random) went towards the server, in the middle of a
PATCH; tuspy retries, asks the offset with HEAD and resumes from there.
"""

import os
import random
import socket
import sys
import threading
from urllib.parse import urlsplit, urlunsplit

from tusclient import client as tus_client


class CuttingProxy:
    """A TCP proxy that cuts the connection each time about `every` bytes went upstream."""

    def __init__(self, upstream, every, seed=14):
        self.upstream = upstream
        self.every = every
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.left = self._next()
        self.cuts = 0
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _next(self):
        return int(self.every * (0.5 + self.random.random()))

    def _accept(self):
        while True:
            downstream, _ = self.listener.accept()
            upstream = socket.create_connection(self.upstream)
            threading.Thread(
                target=self._pump, args=(downstream, upstream, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, downstream, False), daemon=True
            ).start()

    def _pump(self, source, sink, counts):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if counts:
                    with self.lock:
                        if len(data) >= self.left:
                            # Forward part of it, then cut both sides mid-request.
                            sink.sendall(data[: self.left])
                            self.left = self._next()
                            self.cuts += 1
                            raise ConnectionAbortedError("cut")
                        self.left -= len(data)
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def main():
    args = sys.argv[1:]
    cut_every = None
    if "--cut-every" in args:
        at = args.index("--cut-every")
        cut_every = int(args[at + 1])
        del args[at : at + 2]
    endpoint, chunk_size, files = args[0], int(args[1]), args[2:]
    proxy = None
    if cut_every:
        parts = urlsplit(endpoint)
        proxy = CuttingProxy((parts.hostname, parts.port), cut_every)
        endpoint = urlunsplit(parts._replace(netloc=f"127.0.0.1:{proxy.port}"))
    client = tus_client.TusClient(
        endpoint, headers={"Authorization": "Bearer " + os.environ["TUS_TOKEN"]}
    )
    for path in files:
        uploader = client.uploader(
            path,
            chunk_size=chunk_size,
            metadata={"filename": os.path.basename(path), "filetype": "image/png"},
            upload_checksum=True,
            retries=100 if cut_every else 0,
            retry_delay=0.05,
        )
        uploader.upload()
        media_id = uploader.request.response_headers.get("upload-media-id")
        if not media_id:
            sys.exit(f"{path}: the last answer named no Upload-Media-Id")
        print(path, media_id, flush=True)
    if proxy is not None:
        print(f"# connections cut: {proxy.cuts}", file=sys.stderr)
        if proxy.cuts == 0:
            sys.exit("the proxy cut no connection")


if __name__ == "__main__":
    main()
