"""The unit of work: one group (MGRS tile x period) with its scenes, identity and output names."""
