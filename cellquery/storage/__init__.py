"""Where the data lie: object storage settings, downloads, byte-range reads, integrity checks, the demo's
object server."""
