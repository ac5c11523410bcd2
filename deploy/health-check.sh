#!/bin/sh
# health-check.sh: the container's HEALTHCHECK (the seed's, on the node's
# own port). `curl -f` fails on the 503 that /health answers when the node
# is unhealthy (for example its Redis broker is unreachable).
curl -f http://localhost:${PORT:-3000}/health || exit 1
