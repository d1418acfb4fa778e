"""The pure core: no sockets, no clock, no randomness, no SQL, no framework.

Flows are generators that yield effects (see :mod:`.effects`) and return a
:class:`~.http.Response`; drivers carry the effects out.
"""
