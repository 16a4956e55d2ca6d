"""Raw text -> tokens -> training batches: readers, corpus preparation, objectives, labelled tasks, sampler."""
