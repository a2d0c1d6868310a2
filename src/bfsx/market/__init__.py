"""bfsx.market"""
