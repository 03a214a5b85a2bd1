"""Derive: pure functions of raw records and tables: statistics with intervals, the knee,
cost per million and the recommendation, accuracy against fp32.
"""
