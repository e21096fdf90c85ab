"""The CELLxGENE standard as the Census keeps it: ontologies, gene references, the validator, the Census
releases and their inclusion rules, the join key."""
