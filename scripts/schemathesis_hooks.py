"""schemathesis hooks for scripts/test.d/20-openapi.sh (named in schemathesis.toml).

Each generated `Idempotency-Key` is made unique. The fuzzer draws keys from a
small space ("0", "A"…) and sends the same key with different bodies; orgplane
rightly refuses that (`422`, the contract), which schemathesis would report
as a valid request rejected. A key that is itself invalid stays invalid.
"""

import uuid

import schemathesis

SUFFIX = "~fuzz~"


def unique(key):
    # A case can be sent again (shrinking, replays): start from its own key each time.
    # HTTP drops the blanks around a header value, so the server sees the key without them.
    key = str(key).split(SUFFIX)[0].strip(" \t")
    if key and len(key) <= 255 and all(0x21 <= ord(c) <= 0x7E for c in key):
        return f"{key[:200]}{SUFFIX}{uuid.uuid4().hex}"
    return key


@schemathesis.hook
def before_call(context, case, kwargs):
    for headers in (kwargs.get("headers"), case.headers):
        if headers:
            for name in list(headers):
                if name.lower() == "idempotency-key":
                    headers[name] = unique(headers[name])
