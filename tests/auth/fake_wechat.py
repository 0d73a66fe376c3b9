"""A stand-in for WeChat's code2session API on a real socket, served from a thread.

The test scripts what each login code answers; anything unscripted is WeChat's "invalid code"
(40029). Every request is recorded, so a test can check what the server was sent.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Answer:
    body: Any  # a dict is sent as JSON, a str as is
    status: int = 200
    delay: float = 0.0


@dataclass
class FakeWeChat:
    apps: dict[str, str]  # appid → app secret the server accepts
    answers: dict[str, Answer] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                fake.requests.append({"path": url.path, **query})
                answer = fake._answer(url.path, query)
                if answer.delay:
                    time.sleep(answer.delay)
                body = answer.body if isinstance(answer.body, str) else json.dumps(answer.body)
                payload = body.encode()
                try:
                    self.send_response(answer.status)
                    # WeChat labels its JSON text/plain: the client must not rely on the type.
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (the slow-server test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._stopped = False

    def _answer(self, path: str, query: dict[str, str]) -> Answer:
        if path != "/sns/jscode2session" or query.get("grant_type") != "authorization_code":
            return Answer({"errcode": 40002, "errmsg": "invalid grant_type"})
        if self.apps.get(query.get("appid", "")) != query.get("secret"):
            return Answer({"errcode": 40125, "errmsg": "invalid appsecret"})
        return self.answers.get(
            query.get("js_code", ""), Answer({"errcode": 40029, "errmsg": "invalid code"})
        )

    def login(self, code: str, openid: str, unionid: str | None = None) -> None:
        """Script a successful code2session for ``code``."""
        body = {"openid": openid, "session_key": f"SESSION-KEY-{code}"}
        if unionid is not None:
            body["unionid"] = unionid
        self.answers[code] = Answer(body)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeWeChat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (a second call does nothing)."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
