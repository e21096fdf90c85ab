"""The query workflow's steps (resolve, shard, census, assemble, validate, register, describe) and the
commands that read its results."""
