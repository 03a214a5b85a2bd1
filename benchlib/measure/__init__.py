"""Measure: build the workload (zoo, inputs, precision), drive it with client threads (load),
and sweep the grid of one params file into raw records.
"""
