"""The ingest workflow: one's own h5ads made into CELLxGENE datasets (`standardize`, then the validator),
registered into a growing, versioned collection, with a Census-shaped store per version
(`cellquery.store`)."""
