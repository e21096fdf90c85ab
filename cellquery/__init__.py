"""cellquery: a YAML query over CELLxGENE-style data, built into a validated, versioned dataset."""
