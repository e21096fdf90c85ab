"""What a result file holds beside its cells: provenance, the CELLxGENE submission form, exports."""
