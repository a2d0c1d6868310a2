"""bfsx.account"""
