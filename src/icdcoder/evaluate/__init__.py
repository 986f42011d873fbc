"""Evaluation: coding metrics (:mod:`.metrics`) and CodiEsp submission files and scorer (:mod:`.codiesp`)."""
