"""Present: the notebooks' runner (papermill, HTML), tables for people, charts, and the
seed study's published table.
"""
