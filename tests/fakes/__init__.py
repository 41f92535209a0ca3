"""Fakes registered at the app's real seams: cameras, a virtual camera backend, the Hub, a clock, weights."""
