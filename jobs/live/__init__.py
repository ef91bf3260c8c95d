"""Where changes are pushed: the publisher (after commit, coalesced), WebSocket consumers and their routes."""
