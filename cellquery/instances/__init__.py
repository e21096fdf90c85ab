"""The LaminDB instances a build reads and writes: connecting, the source (public, a user's own, the demo),
the target and who owns its results."""
