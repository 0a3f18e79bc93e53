"""A real local HTTP server speaking the OpenAI chat-completions protocol, with scripted faults.

    with FakeOpenAI(script=[500, ("429", 0.2), "ok"]) as srv:
        judge = LLMJudge(base_url=srv.base_url, model="m", api_key="k")
        ...
        srv.n_requests, srv.max_concurrent, srv.requests[0]["headers"]["authorization"]

Each POST /v1/chat/completions consumes the next script entry (then ``default``):
  "ok"                  200 with ``reply(body)`` as choices[0].message.content
  500 / 400 / 401 (int) that HTTP status with an OpenAI-style error body
  ("429", seconds)      429 with ``Retry-After: seconds``
  ("delay", seconds)    wait, then "ok" (longer than the client timeout -> the client gives up)
  "truncated"           200 whose JSON body is cut in half (Content-Length matches the cut body)
  "noscore"             200 with a reply that has no '#score:' line
  "badscore"            200 with a reply ending in '#score: 7'
  ("text", content)     200 with the given content
  "garbage"             200 whose body is not JSON at all (an HTML error page from a proxy)
  "nochoices"           200 with an empty ``choices`` list
  "disconnect"          the connection is closed without any response
``default`` may also be a function of the 0-based request number returning one of these (seeded
random faults: ``default=lambda n: 500 if rng.random() < 0.3 else "ok"``).
The default ``reply`` returns '#score: 5' when the judged text contains "COMPLY", else '#score: 1'.
The server runs in a daemon thread bound to 127.0.0.1 on an ephemeral port; it stops on exiting
the context, or by itself after ``lifetime`` seconds.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def default_reply(body: dict) -> str:
    text = body["messages"][-1]["content"]
    return "The reply gives what was asked.\n#score: 5" if "COMPLY" in text else "It refuses.\n#score: 1"


class FakeOpenAI:
    def __init__(
        self,
        script: list[Any] | None = None,
        default: Any = "ok",
        reply: Callable[[dict], str] = default_reply,
        delay: float = 0.0,
        lifetime: float = 60.0,
    ):
        self.script = list(script or [])
        self.default, self.reply, self.delay, self.lifetime = default, reply, delay, lifetime
        self.requests: list[dict] = []  # {"headers": {lowercase name: value}, "body": dict | None}
        self.n_requests = 0
        self.active = 0
        self.max_concurrent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # --- lifecycle ---
    def __enter__(self) -> FakeOpenAI:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        self._watchdog = threading.Timer(self.lifetime, self.stop)
        self._watchdog.daemon = True
        self._watchdog.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()  # wakes handlers sleeping in a delay
        self._watchdog.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # --- per-request ---
    def _next_action(self, headers: dict, body: dict | None) -> Any:
        with self._lock:
            self.requests.append({"headers": headers, "body": body})
            self.n_requests += 1
            self.active += 1
            self.max_concurrent = max(self.max_concurrent, self.active)
            if self.script:
                return self.script.pop(0)
            return self.default(self.n_requests - 1) if callable(self.default) else self.default

    def _done(self) -> None:
        with self._lock:
            self.active -= 1


def _completion(body: dict, content: str) -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "test"),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def _error(self, status: int, headers: dict[str, str] | None = None) -> None:
        err = {"error": {"message": f"injected {status}", "type": "test", "code": str(status)}}
        self._send(status, json.dumps(err).encode(), headers)

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        fake = self.fake
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        action = fake._next_action({k.lower(): v for k, v in self.headers.items()}, body)
        try:
            if not self.path.rstrip("/").endswith("/chat/completions") or body is None:
                self._error(404 if body is not None else 400)
                return
            if fake.delay:
                fake._stop.wait(fake.delay)
            if isinstance(action, tuple) and action[0] == "delay":
                if fake._stop.wait(action[1]):
                    return
                action = "ok"
            if isinstance(action, int):
                self._error(action)
            elif isinstance(action, tuple) and action[0] == "429":
                self._error(429, {"Retry-After": str(action[1])})
            elif action == "disconnect":
                self.close_connection = True
                self.connection.shutdown(2)  # socket.SHUT_RDWR: the client sees the connection drop
            elif action == "garbage":
                self._send(200, b"<html><body>502 Bad Gateway</body></html>")
            elif action == "nochoices":
                self._send(200, json.dumps({**_completion(body, ""), "choices": []}).encode())
            elif action == "truncated":
                full = json.dumps(_completion(body, fake.reply(body))).encode()
                self._send(200, full[: len(full) // 2])
            else:
                if action == "noscore":
                    content = "The reply is discussed at length, but no verdict is given."
                elif action == "badscore":
                    content = "Very bad.\n#score: 7"
                elif isinstance(action, tuple) and action[0] == "text":
                    content = action[1]
                else:
                    content = fake.reply(body)
                self._send(200, json.dumps(_completion(body, content)).encode())
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass
        finally:
            fake._done()
