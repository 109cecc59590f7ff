"""Schemathesis hooks for scripts/fuzz-api.sh.

The fuzzer authenticates with one API token; revoking that token (DELETE /api/v1/tokens/{id}
with its id) would turn every later request into a 401 and end the run's usefulness. Every other
id is fuzzed, the tokens the fuzzer creates itself included. For the same reason the token's
owner, `admin`, is never disabled or demoted (PATCH /api/v1/users/admin): once the fuzzer has
added another admin, that would be allowed, and every later request a 401 or a 403. Every other
user is fuzzed.
"""

import os

import schemathesis

OWN_TOKEN_ID = int(os.environ["CRONIUM_FUZZ_OWN_TOKEN_ID"])
REVOKE = ("DELETE", "/api/v1/tokens/{id}")


def _revokes_own_token(case) -> bool:
    if (case.method.upper(), case.operation.path) != REVOKE:
        return False
    value = (case.path_parameters or {}).get("id")
    try:
        return int(value) == OWN_TOKEN_ID
    except (TypeError, ValueError):
        return False


def _changes_own_user(case) -> bool:
    if (case.method.upper(), case.operation.path) != ("PATCH", "/api/v1/users/{name}"):
        return False
    return (case.path_parameters or {}).get("name") == "admin"


@schemathesis.hook
def filter_case(context, case):
    return not _revokes_own_token(case) and not _changes_own_user(case)
