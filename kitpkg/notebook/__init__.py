"""Notebook bootstrap helpers: Drive, checkpoint sync, gdown fetch, offline wheelhouse."""
