"""Files on disk: h5ad reading and writing, atomic writes, where a build puts its files, file locks."""
