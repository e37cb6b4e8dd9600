"""Schemathesis hooks for contract.sh: what a client that follows the documents does.

orders' document asks for a new Idempotency-Key for every new order (the same key with
another body is refused with 422, by design). Generated cases repeat short keys across
different bodies, so each well-formed key is replaced by a fresh UUID before it is sent;
malformed or missing keys, which the run sends on purpose, are left as they are.
"""

import re
import uuid

import schemathesis

IDEMPOTENCY_KEY = re.compile(r"^[!-~]{1,255}$")


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    headers = case.headers or {}
    for name, value in list(headers.items()):
        if name.lower() == "idempotency-key" and isinstance(value, str) and IDEMPOTENCY_KEY.match(value):
            headers[name] = str(uuid.uuid4())
