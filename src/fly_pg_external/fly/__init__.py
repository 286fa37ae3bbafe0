"""Fly.io's two APIs, as flyctl and fly-go use them: GraphQL for IPs and the app's role, the
Machines REST API ("flaps") for machines, leases and waits. Wire formats live only here."""
