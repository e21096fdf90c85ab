"""The Census-shaped TileDB-SOMA store builder, step by step as the Census builder's `build_soma/`: what each
dataset contributes (`sources`), one experiment per organism (`experiment`, with `normalized` values and the
SOMA `arrays`), the `census_info` tables, a validation pass (`validate`), and `build` running them in
order."""
