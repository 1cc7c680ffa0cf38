"""The MSC4195 hash derivation (behaviour reference §4), written independently of the service.

H(list) = unpadded standard base64 of SHA-256 over the compact JSON array of the strings. Go also escapes
<, >, & and U+2028/9; the inputs used here contain none of them, so plain compact JSON gives the same bytes.
"""

import base64
import hashlib
import json


def h(*parts: str) -> str:
    text = json.dumps(list(parts), separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return base64.b64encode(digest).decode("ascii").rstrip("=")


def room_alias(room_id: str, slot_id: str) -> str:
    return h(room_id, slot_id)


def identity(user_id: str, device_id: str, member_id: str) -> str:
    return h(user_id, device_id, member_id)
