"""bfsx.posserver"""
