"""Scale out: one task per params file on a Dask cluster, and outputs on any fsspec URL.
"""
