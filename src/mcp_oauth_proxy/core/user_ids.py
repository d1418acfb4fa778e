"""The user ids of principals, and which forms belong to which kind: a
person a browser login names takes the upstream's id as it is, unless it
could pass for another kind of principal (an upstream attribute a person
chose may say anything)."""

from __future__ import annotations

import re

# A machine client acting for itself (client credentials).
CLIENT_PREFIX = "client:"
# Longest id a person may have (the connections page's cookie carries it).
MAX_PERSON_ID = 255
# A machine client ("client:<id>"), or a person of an ID-JAG issuer other
# than the tenant's upstream ("<issuer URL>#<sub>", machine_grants.user_id_of).
_NOT_A_PERSON = re.compile(re.escape(CLIENT_PREFIX) + r"|[a-zA-Z][a-zA-Z0-9+.-]*://[^#]*#")


def person_id_problem(user_id: str) -> str | None:
    """Why the upstream's id for a person cannot be one here, if it cannot."""
    if len(user_id) > MAX_PERSON_ID:
        return f"longer than {MAX_PERSON_ID} characters"
    if _NOT_A_PERSON.match(user_id):
        return "in the form of another kind of principal's"
    return None
