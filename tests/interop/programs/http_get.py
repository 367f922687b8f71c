"""urllib.request and http.client against a server: prints JSON (status, length, SHA-256) for both."""

import hashlib
import http.client
import json
import sys
import urllib.parse
import urllib.request

url = sys.argv[1]
with urllib.request.urlopen(url, timeout=10) as answer:
    body = answer.read()
    first = {"status": answer.status, "length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
parts = urllib.parse.urlsplit(url)
connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=10)
connection.request("GET", parts.path or "/")
local = list(connection.sock.getsockname()) if connection.sock else None
reply = connection.getresponse()
body = reply.read()
second = {"status": reply.status, "length": len(body), "sha256": hashlib.sha256(body).hexdigest(),
          "local": local}
connection.close()
print(json.dumps({"urllib": first, "http_client": second}))
