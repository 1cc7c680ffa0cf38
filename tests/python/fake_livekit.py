"""A fake LiveKit, faked only at its HTTP (Twirp) API: `POST /twirp/livekit.RoomService/CreateRoom` and
`RemoveParticipant` (the membership monitor's kick).

The service never opens LiveKit's WebSocket; it only calls Twirp, so this records those calls (protobuf or
Twirp JSON) and answers with a room, or with an empty response for a removal.
"""

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from google.protobuf import json_format
from livekit.protocol import models, room

CREATE_ROOM_PATH = "/twirp/livekit.RoomService/CreateRoom"
REMOVE_PARTICIPANT_PATH = "/twirp/livekit.RoomService/RemoveParticipant"
# The API key and secret the service under test signs with.
LIVEKIT_KEY = "pytest-api-key"
LIVEKIT_SECRET = "pytest-api-secret-5b1c0d7e9f2a4b6c8d0e1f3a"


@dataclass
class CreateRoomCall:
    path: str
    content_type: str
    bearer: Optional[str]
    name: str
    empty_timeout: int
    departure_timeout: int
    max_participants: int


class FakeLiveKit:
    def __init__(self) -> None:
        self.calls: list[CreateRoomCall] = []
        self.other_paths: list[str] = []
        # (room, identity) of every RemoveParticipant.
        self.removed: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path.endswith(REMOVE_PARTICIPANT_PATH):
                    self._remove(body)
                    return
                if not self.path.endswith(CREATE_ROOM_PATH):
                    with fake._lock:
                        fake.other_paths.append(self.path)
                    self._send(404, "application/json", b'{"code":"bad_route","msg":"no such method"}')
                    return
                content_type = self.headers.get("Content-Type", "")
                request = room.CreateRoomRequest()
                is_json = content_type.startswith("application/json")
                if is_json:
                    json_format.Parse(body.decode("utf-8"), request)
                else:
                    request.ParseFromString(body)
                authorization = self.headers.get("Authorization", "")
                bearer = authorization[len("Bearer ") :] if authorization.startswith("Bearer ") else None
                call = CreateRoomCall(
                    path=self.path,
                    content_type=content_type,
                    bearer=bearer,
                    name=request.name,
                    empty_timeout=request.empty_timeout,
                    departure_timeout=request.departure_timeout,
                    max_participants=request.max_participants,
                )
                with fake._lock:
                    fake.calls.append(call)
                answer = models.Room(sid="RM_fake", name=request.name, creation_time=1700000000)
                if is_json:
                    self._send(200, "application/json", json_format.MessageToJson(answer).encode())
                else:
                    self._send(200, "application/protobuf", answer.SerializeToString())

            def do_GET(self) -> None:  # noqa: N802
                with fake._lock:
                    fake.other_paths.append(self.path)
                self._send(404, "application/json", json.dumps({"code": "bad_route"}).encode())

            def _remove(self, body: bytes) -> None:
                is_json = self.headers.get("Content-Type", "").startswith("application/json")
                request = room.RoomParticipantIdentity()
                if is_json:
                    json_format.Parse(body.decode("utf-8"), request)
                else:
                    request.ParseFromString(body)
                with fake._lock:
                    fake.removed.append((request.room, request.identity))
                answer = room.RemoveParticipantResponse()
                if is_json:
                    self._send(200, "application/json", json_format.MessageToJson(answer).encode())
                else:
                    self._send(200, "application/protobuf", answer.SerializeToString())

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def snapshot(self) -> list[CreateRoomCall]:
        with self._lock:
            return list(self.calls)

    def removals(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self.removed)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
