"""Dataset validation: checks grouped by what they read (meta and contract, frame tables, vectors,
videos), the run that orders them, and the report later stages read back."""
