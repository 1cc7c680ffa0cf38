"""A fake LiveKit, faked only at its HTTP (Twirp) API: `POST /twirp/livekit.RoomService/CreateRoom`, and the
membership monitor's `RemoveParticipant` (a kick), `DeleteRoom` and `GetParticipant` (answered `not_found`:
nobody ever joins this fake, so to it every participant is one who never connected).

LiveKit is faked at that API because no LiveKit server binary is available to these tests. The service never
opens LiveKit's WebSocket; it only calls Twirp, so this records those calls and answers with a room, or with an empty
response for a removal.
Requests are decoded with LiveKit's published protocol types (the `livekit-protocol` package). Like the
official server SDKs, the service speaks protobuf (`Content-Type: application/protobuf`); a real LiveKit would
also take Twirp JSON, but this fake rejects it so that a client falling back to JSON fails the tests. Errors are
Twirp's JSON `{"code", "msg"}`, as LiveKit sends them whatever the request's encoding.
"""

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from google.protobuf.message import DecodeError
from livekit.protocol import models, room

CREATE_ROOM_PATH = "/twirp/livekit.RoomService/CreateRoom"
REMOVE_PARTICIPANT_PATH = "/twirp/livekit.RoomService/RemoveParticipant"
DELETE_ROOM_PATH = "/twirp/livekit.RoomService/DeleteRoom"
GET_PARTICIPANT_PATH = "/twirp/livekit.RoomService/GetParticipant"
PROTOBUF = "application/protobuf"
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
        # The room of every DeleteRoom.
        self.deleted: list[str] = []
        # (room, identity) of every GetParticipant.
        self.looked_up: list[tuple[str, str]] = []
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
                if self.path.endswith(DELETE_ROOM_PATH):
                    self._delete(body)
                    return
                if self.path.endswith(GET_PARTICIPANT_PATH):
                    self._get_participant(body)
                    return
                if not self.path.endswith(CREATE_ROOM_PATH):
                    with fake._lock:
                        fake.other_paths.append(self.path)
                    self._twirp_error(404, "bad_route", "no such method")
                    return
                content_type = self.headers.get("Content-Type", "")
                if content_type != PROTOBUF:
                    self._twirp_error(400, "malformed", f"this fake takes {PROTOBUF}, not {content_type!r}")
                    return
                request = room.CreateRoomRequest()
                try:
                    request.ParseFromString(body)
                except DecodeError as error:
                    self._twirp_error(400, "malformed", f"not a CreateRoomRequest: {error}")
                    return
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
                self._send(200, PROTOBUF, answer.SerializeToString())

            def do_GET(self) -> None:  # noqa: N802
                with fake._lock:
                    fake.other_paths.append(self.path)
                self._twirp_error(404, "bad_route", "no such method")

            def _twirp_error(self, status: int, code: str, msg: str) -> None:
                self._send(status, "application/json", json.dumps({"code": code, "msg": msg}).encode())

            def _remove(self, body: bytes) -> None:
                content_type = self.headers.get("Content-Type", "")
                if content_type != PROTOBUF:
                    self._twirp_error(400, "malformed", f"this fake takes {PROTOBUF}, not {content_type!r}")
                    return
                request = room.RoomParticipantIdentity()
                try:
                    request.ParseFromString(body)
                except DecodeError as error:
                    self._twirp_error(400, "malformed", f"not a RoomParticipantIdentity: {error}")
                    return
                with fake._lock:
                    fake.removed.append((request.room, request.identity))
                self._send(200, PROTOBUF, room.RemoveParticipantResponse().SerializeToString())

            def _delete(self, body: bytes) -> None:
                request = self._parse(room.DeleteRoomRequest(), body)
                if request is None:
                    return
                with fake._lock:
                    fake.deleted.append(request.room)
                self._send(200, PROTOBUF, room.DeleteRoomResponse().SerializeToString())

            def _get_participant(self, body: bytes) -> None:
                request = self._parse(room.RoomParticipantIdentity(), body)
                if request is None:
                    return
                with fake._lock:
                    fake.looked_up.append((request.room, request.identity))
                self._twirp_error(404, "not_found", "participant not found")

            def _parse(self, request, body: bytes):
                """The request decoded, or None after answering `malformed`."""
                content_type = self.headers.get("Content-Type", "")
                if content_type != PROTOBUF:
                    self._twirp_error(400, "malformed", f"this fake takes {PROTOBUF}, not {content_type!r}")
                    return None
                try:
                    request.ParseFromString(body)
                except DecodeError as error:
                    self._twirp_error(400, "malformed", f"not a {type(request).__name__}: {error}")
                    return None
                return request

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

    def deletions(self) -> list[str]:
        with self._lock:
            return list(self.deleted)

    def lookups(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self.looked_up)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
