"""What a query says: the spec file and its checks, the criteria it compiles to, the genes it names, the
workflow's configuration."""
