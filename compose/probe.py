#!/usr/bin/env python3
"""studio-probe URL [URL ...]: exit 0 when every URL answers 2xx within 3 s (container healthchecks).

One small program instead of shell one-liners, so healthchecks are the same under Docker and podman
and need no curl in the image.
"""

import sys
import urllib.error
import urllib.request


def main(urls: list[str]) -> int:
    if not urls:
        print("usage: studio-probe URL [URL ...]", file=sys.stderr)
        return 2
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                resp.read(65536)
        except (urllib.error.URLError, OSError) as exc:
            print(f"{url}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
