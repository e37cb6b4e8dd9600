"""Schemathesis hooks for contract.sh: what a client that follows the documents does.

orders' document asks for a new Idempotency-Key for every new order (the same key with
another body is refused with 422, by design). Generated cases repeat short keys across
different bodies, so each well-formed key is replaced by a fresh UUID before it is sent;
malformed or missing keys, which the run sends on purpose, are left as they are.

auth's document says a new password must not be a common one, a rule no pattern can
state (a corpus of 30,000 and their dressed-up forms). A person picks a password of their
own; a generator's short, simple strings are just what the corpus holds. So a registration
password that meets every rule the document can state gets a few random letters of its
own added, keeping it within those rules; passwords that break them, which the run sends
on purpose, are left as they are.
"""

import random
import re
import string
import uuid

import schemathesis

IDEMPOTENCY_KEY = re.compile(r"^[!-~]{1,255}$")
# auth's new-password rules that its document states (lengths, distinct characters).
PASSWORD_MIN, PASSWORD_MAX, PASSWORD_DISTINCT = 12, 128, 5
OWN_LETTERS = 6


def documented_password(value):
    return (
        isinstance(value, str)
        and PASSWORD_MIN <= len(value) <= PASSWORD_MAX - OWN_LETTERS
        and len(set(value)) >= PASSWORD_DISTINCT
    )


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    headers = case.headers or {}
    for name, value in list(headers.items()):
        if name.lower() == "idempotency-key" and isinstance(value, str) and IDEMPOTENCY_KEY.match(value):
            headers[name] = str(uuid.uuid4())
    body = case.body
    if case.path.endswith("/auth/register") and isinstance(body, dict):
        password = body.get("password")
        if documented_password(password):
            body["password"] = password + "".join(random.choices(string.ascii_letters, k=OWN_LETTERS))
